//! Q6_K: six-bit levels with a signed 8-bit scale per 16 values.

use gptq_core::quant::types::BlockQ6K;

use super::super::rounding::{nearest_int, to_f16};
use super::super::search::{GROUP_MAX_EPS, make_qx_quants};
use super::QK_K;

/// Quantizes a row (whole super-blocks) into Q6_K, as ggml's `quantize_q6_K`:
/// [`make_qx_quants`] per sub-block of 16 (weighted by `x²`, or by the
/// importance as given: ggml's Q6_K does not mix in the row's spread), then
/// each scale as the nearest of 128 steps of the largest one (by magnitude).
pub fn quantize(x: &[f32], y: &mut [BlockQ6K], qw: Option<&[f32]>) {
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y.iter_mut()).enumerate() {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
        for j in 0..16 {
            let w = qw.map(|qw| &qw[QK_K * i + 16 * j..QK_K * i + 16 * (j + 1)]);
            scales[j] = make_qx_quants(
                32,
                &xb[16 * j..16 * (j + 1)],
                &mut l[16 * j..16 * (j + 1)],
                w,
            );
            if scales[j].abs() > max_abs {
                max_abs = scales[j].abs();
                max_scale = scales[j];
            }
        }
        if max_abs < GROUP_MAX_EPS {
            *yb = BlockQ6K::ZERO;
            continue;
        }
        let iscale = -128.0 / max_scale;
        yb.d = to_f16(1.0 / iscale).0;
        for j in 0..16 {
            // `int8_t = MIN(127, nearest_int(..))`: clamp above, wrap below.
            yb.scales[j] = nearest_int(iscale * scales[j]).min(127) as i8;
        }
        let d = yb.d.to_f32();
        for j in 0..16 {
            let dl = d * f32::from(yb.scales[j]);
            if dl == 0.0 {
                continue;
            }
            for k in 16 * j..16 * (j + 1) {
                l[k] = (nearest_int(xb[k] / dl).clamp(-32, 31) + 32) as i8;
            }
        }
        pack(yb, &l);
    }
}

/// Splits six-bit levels (0..64) into `ql` nibbles and `qh` bit pairs.
fn pack(y: &mut BlockQ6K, l: &[i8; QK_K]) {
    for half in 0..2 {
        let lh = &l[128 * half..128 * (half + 1)];
        let ql = &mut y.ql[64 * half..64 * (half + 1)];
        for k in 0..32 {
            let q = [lh[k], lh[k + 32], lh[k + 64], lh[k + 96]].map(|v| v as u8);
            ql[k] = (q[0] & 0x0f) | ((q[2] & 0x0f) << 4);
            ql[k + 32] = (q[1] & 0x0f) | ((q[3] & 0x0f) << 4);
            y.qh[32 * half + k] =
                (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}
