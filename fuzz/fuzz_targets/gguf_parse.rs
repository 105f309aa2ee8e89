//! The GGUF reader on raw bytes: any input is parsed or refused with an
//! error, and a parsed file's tensors lie in the file, in order, whole.

#![no_main]

use gptq_core::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data) else {
        return;
    };
    let len = data.len() as u64;
    assert!(file.alignment.is_power_of_two());
    assert!(file.data_offset.is_multiple_of(file.alignment));
    for t in &file.tensors {
        assert!(t.offset >= file.data_offset, "{t:?}");
        assert!(
            t.offset
                .checked_add(t.n_bytes)
                .is_some_and(|end| end <= len)
        );
        assert_eq!(file.tensor_data(data, t).len() as u64, t.n_bytes);
        assert_eq!(file.tensor(&t.name), Some(t));
        let _ = (t.n_elements(), t.row_len(), t.n_rows());
    }
    for (key, value) in &file.metadata {
        // The same entry (not just an equal one: NaN values are unequal).
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        let _ = file.get_u64(key);
        let _ = file.get_f32(key);
        let _ = file.get_str(key);
        let _ = file.get_str_array(key);
        let _ = file.get_i32_array(key);
    }
});
