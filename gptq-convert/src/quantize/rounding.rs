//! The roundings ggml's quantizers use, reproduced exactly: they decide which
//! grid point a value lands on, so any difference changes bytes.

use half::f16;

/// ggml's `nearest_int`: adds 1.5·2²³ so that the float adder rounds to an
/// integer (to nearest, ties to even), then reads the integer out of the
/// mantissa. Exact for |x| ≤ 2²² - 1, which ggml asserts in debug builds; for
/// larger or non-finite `x` it returns the same bits ggml's release build does,
/// which is what byte identity needs.
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// An f32 rounded to f16 as ggml stores scales (`GGML_FP32_TO_FP16`: to nearest,
/// ties to even), and the value the reader will see again.
pub fn to_f16(x: f32) -> (f16, f32) {
    let h = f16::from_f32(x);
    (h, h.to_f32())
}

/// C's `(int8_t)f` as GCC compiles it on x86-64 (`cvttss2si` to 32 bits, then
/// keep the low byte), for the in-range values ggml feeds it.
pub fn trunc_i8(x: f32) -> i8 {
    (x as i32) as i8
}

/// ggml's `MAX(a, b)` macro, `a > b ? a : b`, including what it does with a NaN.
pub fn c_max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-7.49), -7);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
        // Out of range: ggml's release build wraps; so do we, without panicking.
        let _ = nearest_int(f32::NAN);
        let _ = nearest_int(f32::INFINITY);
        let _ = nearest_int(1e30);
    }

    #[test]
    fn f16_rounding_is_ties_to_even() {
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
        assert_eq!(to_f16(1.0 + 2f32.powi(-11)).1, 1.0);
        assert_eq!(
            to_f16(1.0 + 3.0 * 2f32.powi(-11)).1,
            1.0 + 2.0 * 2f32.powi(-10)
        );
        assert_eq!(trunc_i8(8.99), 8);
        assert_eq!(trunc_i8(0.49), 0);
        assert!(c_max(f32::NAN, 1.0) == 1.0 && c_max(1.0, f32::NAN).is_nan());
    }
}
