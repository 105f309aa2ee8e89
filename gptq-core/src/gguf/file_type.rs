//! llama.cpp's file types (`general.file_type`, `llama_ftype`): which quantization
//! a file was made with, by llama-quantize's name (`Q4_K_M`) and as llama.cpp
//! describes it when it loads the file (`Q4_K - Medium`).

use std::fmt;

use super::types::GgmlType;

/// A llama.cpp file type id, as stored in `general.file_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileType(pub u32);

/// (id, llama-quantize's name, llama.cpp's description, main tensor type):
/// `llama_model_ftype_name` and the `default_type` switch of `llama-quant.cpp`
/// at c392e50. Ids 4-6 and 33-35 were retired by llama.cpp.
const TABLE: &[(u32, &str, &str, GgmlType)] = &[
    (0, "F32", "all F32", GgmlType::F32),
    (1, "F16", "F16", GgmlType::F16),
    (2, "Q4_0", "Q4_0", GgmlType::Q4_0),
    (3, "Q4_1", "Q4_1", GgmlType::Q4_1),
    (7, "Q8_0", "Q8_0", GgmlType::Q8_0),
    (8, "Q5_0", "Q5_0", GgmlType::Q5_0),
    (9, "Q5_1", "Q5_1", GgmlType::Q5_1),
    (10, "Q2_K", "Q2_K - Medium", GgmlType::Q2_K),
    (11, "Q3_K_S", "Q3_K - Small", GgmlType::Q3_K),
    (12, "Q3_K_M", "Q3_K - Medium", GgmlType::Q3_K),
    (13, "Q3_K_L", "Q3_K - Large", GgmlType::Q3_K),
    (14, "Q4_K_S", "Q4_K - Small", GgmlType::Q4_K),
    (15, "Q4_K_M", "Q4_K - Medium", GgmlType::Q4_K),
    (16, "Q5_K_S", "Q5_K - Small", GgmlType::Q5_K),
    (17, "Q5_K_M", "Q5_K - Medium", GgmlType::Q5_K),
    (18, "Q6_K", "Q6_K", GgmlType::Q6_K),
    (19, "IQ2_XXS", "IQ2_XXS - 2.0625 bpw", GgmlType::IQ2_XXS),
    (20, "IQ2_XS", "IQ2_XS - 2.3125 bpw", GgmlType::IQ2_XS),
    (21, "Q2_K_S", "Q2_K - Small", GgmlType::Q2_K),
    (22, "IQ3_XS", "IQ3_XS - 3.3 bpw", GgmlType::IQ3_S),
    (23, "IQ3_XXS", "IQ3_XXS - 3.0625 bpw", GgmlType::IQ3_XXS),
    (24, "IQ1_S", "IQ1_S - 1.5625 bpw", GgmlType::IQ1_S),
    (25, "IQ4_NL", "IQ4_NL - 4.5 bpw", GgmlType::IQ4_NL),
    (26, "IQ3_S", "IQ3_S - 3.4375 bpw", GgmlType::IQ3_S),
    (27, "IQ3_M", "IQ3_S mix - 3.66 bpw", GgmlType::IQ3_S),
    (28, "IQ2_S", "IQ2_S - 2.5 bpw", GgmlType::IQ2_XS),
    (29, "IQ2_M", "IQ2_M - 2.7 bpw", GgmlType::IQ2_S),
    (30, "IQ4_XS", "IQ4_XS - 4.25 bpw", GgmlType::IQ4_XS),
    (31, "IQ1_M", "IQ1_M - 1.75 bpw", GgmlType::IQ1_M),
    (32, "BF16", "BF16", GgmlType::BF16),
    (36, "TQ1_0", "TQ1_0 - 1.69 bpw ternary", GgmlType::TQ1_0),
    (37, "TQ2_0", "TQ2_0 - 2.06 bpw ternary", GgmlType::TQ2_0),
];

/// llama.cpp's flag for a file type it guessed from the tensors.
const GUESSED: u32 = 1024;

#[allow(missing_docs)]
impl FileType {
    pub const ALL_F32: FileType = FileType(0);
    pub const MOSTLY_F16: FileType = FileType(1);
    pub const MOSTLY_Q4_0: FileType = FileType(2);
    pub const MOSTLY_Q4_1: FileType = FileType(3);
    pub const MOSTLY_Q8_0: FileType = FileType(7);
    pub const MOSTLY_Q5_0: FileType = FileType(8);
    pub const MOSTLY_Q5_1: FileType = FileType(9);
    pub const MOSTLY_Q2_K: FileType = FileType(10);
    pub const MOSTLY_Q3_K_S: FileType = FileType(11);
    pub const MOSTLY_Q3_K_M: FileType = FileType(12);
    pub const MOSTLY_Q3_K_L: FileType = FileType(13);
    pub const MOSTLY_Q4_K_S: FileType = FileType(14);
    pub const MOSTLY_Q4_K_M: FileType = FileType(15);
    pub const MOSTLY_Q5_K_S: FileType = FileType(16);
    pub const MOSTLY_Q5_K_M: FileType = FileType(17);
    pub const MOSTLY_Q6_K: FileType = FileType(18);
    pub const MOSTLY_IQ4_NL: FileType = FileType(25);
    pub const MOSTLY_IQ4_XS: FileType = FileType(30);
    pub const MOSTLY_BF16: FileType = FileType(32);
}

impl FileType {
    fn row(self) -> Option<&'static (u32, &'static str, &'static str, GgmlType)> {
        TABLE.iter().find(|r| r.0 == self.0)
    }

    /// The file type with llama-quantize's name `name` (case-insensitive;
    /// `Q3_K`, `Q4_K` and `Q5_K` mean their `_M` mixes, as in llama-quantize).
    pub fn from_name(name: &str) -> Option<FileType> {
        let name = match name.to_ascii_uppercase().as_str() {
            "Q3_K" => "Q3_K_M".to_string(),
            "Q4_K" => "Q4_K_M".to_string(),
            "Q5_K" => "Q5_K_M".to_string(),
            other => other.to_string(),
        };
        TABLE.iter().find(|r| r.1 == name).map(|r| FileType(r.0))
    }

    /// The file type llama-quantize writes for files whose matrices are all `ty`
    /// (what `llama-quantize --pure` records): the `_M` mix for Q3_K, Q4_K, Q5_K.
    pub fn for_type(ty: GgmlType) -> Option<FileType> {
        let name = match ty {
            GgmlType::Q3_K => "Q3_K_M",
            GgmlType::Q4_K => "Q4_K_M",
            GgmlType::Q5_K => "Q5_K_M",
            other => other.name(),
        };
        FileType::from_name(name)
    }

    /// llama-quantize's name (`Q4_K_M`), or `None` for an id llama.cpp never defined.
    pub fn name(self) -> Option<&'static str> {
        self.row().map(|r| r.1)
    }

    /// The tensor type most matrices of such a file have (llama-quantize's
    /// `default_type` for it).
    pub fn main_type(self) -> Option<GgmlType> {
        self.row().map(|r| r.3)
    }

    /// How llama.cpp describes the file type when it loads a file
    /// (`llama_model_ftype_name`): `Q4_K - Medium`, `all F32`, `Q4_0`, and
    /// `unknown, may not work` for ids it does not know; a guessed type gets
    /// ` (guessed)`.
    pub fn describe(self) -> String {
        if self.0 & GUESSED != 0 {
            return format!("{} (guessed)", FileType(self.0 & !GUESSED).describe());
        }
        self.row()
            .map_or("unknown, may not work", |r| r.2)
            .to_string()
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_descriptions_follow_llama_cpp() {
        assert_eq!(FileType(15).describe(), "Q4_K - Medium");
        assert_eq!(FileType(0).describe(), "all F32");
        assert_eq!(FileType(5).describe(), "unknown, may not work");
        assert_eq!(FileType(15 | 1024).describe(), "Q4_K - Medium (guessed)");
        assert_eq!(FileType::from_name("q4_k_m"), Some(FileType(15)));
        assert_eq!(FileType::from_name("Q4_K"), Some(FileType(15)));
        assert_eq!(FileType::from_name("iq4_xs"), Some(FileType(30)));
        assert_eq!(FileType::from_name("q4_k_x"), None);
        assert_eq!(FileType::for_type(GgmlType::Q6_K), Some(FileType(18)));
        assert_eq!(FileType::for_type(GgmlType::BF16), Some(FileType(32)));
        assert_eq!(FileType::for_type(GgmlType::Q4_K), Some(FileType(15)));
        assert_eq!(FileType::for_type(GgmlType::Q8_K), None);
        assert_eq!(FileType(11).main_type(), Some(GgmlType::Q3_K));
        assert_eq!(FileType(2).name(), Some("Q4_0"));
        for r in TABLE {
            assert_eq!(FileType::from_name(r.1), Some(FileType(r.0)));
        }
    }
}
