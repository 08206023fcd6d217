//! What a factorized Conv costs in multiply-accumulates, counted from the
//! positions each of its stages runs at, and the ranks of each form that
//! keep a share of the layer's MACs (multiples of the device's channel
//! multiple, never costing as much as the layer).
//!
//! For a layer `[Cout, Cin, kh, kw]` with P_out output positions:
//! - the layer: P_out·Cout·Cin·kh·kw;
//! - SVD (kh×kw Cin→r, 1x1 r→Cout): P_out·r·(Cin·kh·kw + Cout);
//! - spatial SVD (kh×1 Cin→r at H_out × W_in, 1×kw r→Cout):
//!   P_mid·r·Cin·kh + P_out·Cout·r·kw, P_mid = N·H_out·W_in;
//! - Tucker-2 (1x1 Cin→r1 at the input's resolution, kh×kw r1→r2, 1x1
//!   r2→Cout): P_in·Cin·r1 + P_out·(r2·r1·kh·kw + Cout·r2), P_in = N·H_in·W_in.

use super::factor::rank_for_macs;
use super::settings::Form;
use super::{spatial, tucker};
use crate::ir::{Dim, Shape};

/// The positions (batch included) the stages of a factorized Conv run at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Positions {
    /// N·H_in·W_in.
    pub input: u64,
    /// N·H_out·W_in.
    pub middle: u64,
    /// N·H_out·W_out.
    pub output: u64,
}

impl Positions {
    /// From the layer's input and output shapes `[N, C, H, W]` and its
    /// strides. An open spatial dim is estimated from the other side's
    /// (H_in ≈ H_out·stride); when both are open the output counts as 1 (as
    /// costs count an open dim) and the input as the stride.
    pub fn of(input: &Shape, output: &Shape, strides: [usize; 2]) -> Option<Positions> {
        if input.rank() != 4 || output.rank() != 4 {
            return None;
        }
        let known = |d: &Dim| d.known().and_then(|v| u64::try_from(v).ok()).filter(|&v| v > 0);
        let sides = |axis: usize| {
            let stride = strides[axis - 2] as u64;
            match (known(&input.0[axis]), known(&output.0[axis])) {
                (Some(i), Some(o)) => (i, o),
                (Some(i), None) => (i, i.div_ceil(stride)),
                (None, Some(o)) => (o * stride, o),
                (None, None) => (stride, 1),
            }
        };
        let batch = known(&output.0[0]).or_else(|| known(&input.0[0])).unwrap_or(1);
        let ((h_in, h_out), (w_in, w_out)) = (sides(2), sides(3));
        Some(Positions { input: batch * h_in * w_in, middle: batch * h_out * w_in, output: batch * h_out * w_out })
    }
}

fn wide(dims: [usize; 4]) -> [u64; 4] {
    dims.map(|d| d as u64)
}

/// The layer's MACs.
pub fn layer(dims: [usize; 4], at: &Positions) -> u64 {
    let [cout, cin, kh, kw] = wide(dims);
    at.output * cout * cin * kh * kw
}

/// The MACs of `form` at `ranks` (one rank, or Tucker-2's r1 and r2).
pub fn of_form(form: Form, ranks: &[usize], dims: [usize; 4], at: &Positions) -> u64 {
    let [cout, cin, kh, kw] = wide(dims);
    let rank = |i: usize| ranks.get(i).copied().unwrap_or(0) as u64;
    match form {
        Form::Svd => at.output * rank(0) * (cin * kh * kw + cout),
        Form::Spatial => at.middle * rank(0) * cin * kh + at.output * cout * rank(0) * kw,
        Form::Tucker2 => at.input * cin * rank(0) + at.output * (rank(1) * rank(0) * kh * kw + cout * rank(1)),
    }
}

/// The ranks at which `form` keeps `share` of the layer's MACs, or `None`
/// when the form does not apply or saves nothing at one channel multiple.
pub fn ranks_for_share(
    form: Form,
    share: f64,
    dims: [usize; 4],
    at: &Positions,
    multiple: usize,
) -> Option<Vec<usize>> {
    let [cout, cin, kh, kw] = dims;
    let full = layer(dims, at);
    let budget = share * full as f64;
    let single = |per_rank: u64, max_rank: usize| rank_for_macs(budget, per_rank, full, max_rank, multiple);
    match form {
        Form::Svd => {
            let patch = cin * kh * kw;
            single(at.output * (patch + cout) as u64, cout.min(patch)).map(|r| vec![r])
        }
        Form::Spatial if spatial::SpatialSvd::applies(dims) => {
            let per_rank = at.middle * (cin * kh) as u64 + at.output * (cout * kw) as u64;
            single(per_rank, (cout * kw).min(cin * kh)).map(|r| vec![r])
        }
        Form::Tucker2 if tucker::applies(dims) => tucker_ranks(budget, dims, at, multiple),
        Form::Spatial | Form::Tucker2 => None,
    }
}

/// Tucker-2's (r1, r2) proportional to (Cin, Cout) within `budget`: the
/// largest α with MACs(α·Cin, α·Cout) ≤ budget, each rank rounded down to a
/// multiple (at least one), then raised a multiple at a time (the rank
/// further below its channels first) while the budget allows.
fn tucker_ranks(budget: f64, dims: [usize; 4], at: &Positions, multiple: usize) -> Option<Vec<usize>> {
    let [cout, cin, kh, kw] = dims;
    let multiple = multiple.max(1);
    let (max1, max2) = tucker::max_ranks(dims);
    let macs = |r1: usize, r2: usize| of_form(Form::Tucker2, &[r1, r2], dims, at);
    // MACs(α) = a·α² + b·α.
    let a = (at.output * (kh * kw * cin * cout) as u64) as f64;
    let b = (at.input * (cin * cin) as u64 + at.output * (cout * cout) as u64) as f64;
    if a <= 0.0 {
        return None;
    }
    let alpha = (-b + (b * b + 4.0 * a * budget).sqrt()) / (2.0 * a);
    let round = |channels: usize| ((alpha * channels as f64).floor() as usize / multiple * multiple).max(multiple);
    let (mut r1, mut r2) = (round(cin), round(cout));
    if r1 > max1 || r2 > max2 {
        return None;
    }
    loop {
        let grow1 = r1 + multiple <= max1 && macs(r1 + multiple, r2) as f64 <= budget;
        let grow2 = r2 + multiple <= max2 && macs(r1, r2 + multiple) as f64 <= budget;
        match (grow1, grow2) {
            (true, true) if r1 * cout <= r2 * cin => r1 += multiple,
            (_, true) => r2 += multiple,
            (true, false) => r1 += multiple,
            (false, false) => break,
        }
    }
    let reduces = r1 < cin || r2 < cout;
    (reduces && macs(r1, r2) < layer(dims, at)).then(|| vec![r1, r2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(dims: [i64; 4]) -> Shape {
        Shape(dims.iter().map(|&d| if d < 0 { Dim::Symbol("w".into()) } else { Dim::Known(d) }).collect())
    }

    #[test]
    fn positions_come_from_the_shapes_and_open_dims_from_the_strides() {
        let at = Positions::of(&shape([2, 16, 32, 40]), &shape([2, 32, 16, 20]), [2, 2]).unwrap();
        assert_eq!(at, Positions { input: 2 * 32 * 40, middle: 2 * 16 * 40, output: 2 * 16 * 20 });
        // An open width: W_in ≈ W_out·2, and both open: 1 out, 2 in.
        let at = Positions::of(&shape([1, 16, 32, -1]), &shape([1, 32, 16, 20]), [2, 2]).unwrap();
        assert_eq!((at.input, at.middle, at.output), (32 * 40, 16 * 40, 16 * 20));
        let at = Positions::of(&shape([1, 16, 32, -1]), &shape([1, 32, 32, -1]), [1, 2]).unwrap();
        assert_eq!((at.input, at.middle, at.output), (32 * 2, 32 * 2, 32));
    }

    #[test]
    fn macs_of_each_form_are_counted_per_stage() {
        // 3x3 conv 16 → 32, stride 2, 32x40 → 16x20.
        let dims = [32, 16, 3, 3];
        let at = Positions::of(&shape([1, 16, 32, 40]), &shape([1, 32, 16, 20]), [2, 2]).unwrap();
        assert_eq!(layer(dims, &at), 320 * 32 * 16 * 9);
        assert_eq!(of_form(Form::Svd, &[8], dims, &at), 320 * 8 * (144 + 32));
        // kh×1 at 16x40, 1×kw at 16x20.
        assert_eq!(of_form(Form::Spatial, &[8], dims, &at), 640 * 8 * 16 * 3 + 320 * 32 * 8 * 3);
        // 1x1 at 32x40, 3x3 at 16x20, 1x1 at 16x20.
        assert_eq!(of_form(Form::Tucker2, &[8, 16], dims, &at), 1280 * 16 * 8 + 320 * (16 * 8 * 9 + 32 * 16));
    }

    #[test]
    fn ranks_keep_the_share_in_multiples_and_always_save() {
        let dims = [64, 64, 3, 3];
        let at = Positions::of(&shape([1, 64, 16, 16]), &shape([1, 64, 16, 16]), [1, 1]).unwrap();
        let full = layer(dims, &at) as f64;
        for form in [Form::Svd, Form::Spatial, Form::Tucker2] {
            for share in [0.25, 0.5, 0.75] {
                let ranks = ranks_for_share(form, share, dims, &at, 8).unwrap();
                assert!(ranks.iter().all(|r| r % 8 == 0), "{form:?} {share}: {ranks:?}");
                let macs = of_form(form, &ranks, dims, &at) as f64;
                // Within the share, and not a multiple short of it.
                assert!(macs <= share * full, "{form:?} {share}: {macs} of {full}");
                let more: Vec<usize> = ranks.iter().map(|r| r + 8).collect();
                assert!(of_form(form, &more, dims, &at) as f64 > share * full, "{form:?} {share}: {ranks:?}");
            }
        }
        // Spatial: per rank 256·(64·3 + 64·3) MACs; half of 256·36864 → r 48.
        assert_eq!(ranks_for_share(Form::Spatial, 0.5, dims, &at, 8), Some(vec![48]));
        // Tucker-2 of equal channels: ranks within a multiple of each other.
        let tucker = ranks_for_share(Form::Tucker2, 0.5, dims, &at, 8).unwrap();
        assert!(tucker[0].abs_diff(tucker[1]) <= 8, "{tucker:?}");
        // Forms that do not apply, and ranks that would save nothing.
        assert_eq!(ranks_for_share(Form::Spatial, 0.5, [64, 64, 1, 3], &at, 8), None);
        assert_eq!(ranks_for_share(Form::Tucker2, 0.5, [64, 64, 1, 1], &at, 8), None);
        assert_eq!(ranks_for_share(Form::Tucker2, 0.5, [64, 3, 3, 3], &at, 8), None, "r1 8 > Cin 3");
        assert_eq!(ranks_for_share(Form::Spatial, 0.9, [8, 8, 2, 2], &at, 8), None, "one multiple costs as much");
    }
}
