//! ggml's block layouts, byte for byte.
//!
//! Both block types start with an IEEE half-precision scale `d` and are
//! `#[repr(C)]` with alignment 2, so a tensor's bytes in the mapped file can be
//! viewed as a slice of blocks without copying.

use half::f16;

/// Elements per block of the 32-element types.
pub const QK: usize = 32;

/// Q8_0: 32 signed bytes with one f16 scale; element `i` is `qs[i] · d`. 34 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quantized values.
    pub qs: [i8; QK],
}

/// Q4_0: 32 four-bit values with one f16 scale; element `j` is the low nibble of
/// `qs[j]` and element `j + 16` its high nibble, each worth `(q - 8) · d`. 18 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Packed nibbles.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::align_of::<BlockQ8_0>() == 2);
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::align_of::<BlockQ4_0>() == 2);

impl BlockQ8_0 {
    /// A block of zeros.
    pub const ZERO: BlockQ8_0 = BlockQ8_0 {
        d: f16::ZERO,
        qs: [0; QK],
    };
}

impl BlockQ4_0 {
    /// A block whose elements are all zero.
    pub const ZERO: BlockQ4_0 = BlockQ4_0 {
        d: f16::ZERO,
        qs: [0x88; QK / 2],
    };
}
