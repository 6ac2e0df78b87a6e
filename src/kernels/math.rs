//! Branch-free `exp` and `erf` on `f32`, written so the compiler can vectorise the loops that
//! call them (the standard library's `exp` and Burn's `erf` are scalar calls per element).

/// `e^x` to about 2 ulp for `x` in `[-87, 88]`; smaller inputs give a tiny positive number
/// instead of 0 (callers never rely on an exact 0), larger ones are clamped.
///
/// `e^x = 2^n · e^r` with `n = round(x / ln 2)` and `r = x − n·ln 2`, `|r| ≤ ln 2 / 2`; `ln 2`
/// is split in two constants (Cody and Waite) so `r` keeps full precision even for large `n`,
/// `e^r` is its Taylor polynomial to degree 7, and `2^n` is written straight into the exponent
/// bits. Every step is a plain float operation or an integer operation on the value's bits, so
/// a loop of these compiles to vector instructions (a float-to-int `as` cast, which saturates,
/// kept it scalar: 4x slower; `mul_add` without a target FMA is a library call);
/// `kernels::simd::vectorised` picks the vector width at run time.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75; // the first 16 bits of ln 2: n · LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 · 2^23 rounds to the nearest integer: the sum's low mantissa bits then hold
    // `n + 2^22`, and subtracting the constant again gives `n` as a float.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // `n + 127` into the exponent field: the bits of `shifted` minus those of ROUNDER are `n`.
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUNDER.to_bits())
        .wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

/// The error function to about 1.5e-7 absolute (Abramowitz and Stegun 7.1.26, extended to
/// negative arguments by symmetry).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (0.327_591_1 * a + 1.0);
    let poly = 1.061_405_4_f32;
    let poly = poly * t + -1.453_152_1;
    let poly = poly * t + 1.421_413_8;
    let poly = poly * t + -0.284_496_74;
    let poly = poly * t + 0.254_829_6;
    let magnitude = 1.0 - poly * t * exp(-a * a);
    magnitude.copysign(x)
}

/// Lanes of the reductions below: eight independent partial results, so the compiler can keep
/// them in one vector register (a single running sum is a chain of dependent additions that
/// it may not reorder).
const LANES: usize = 8;

/// `Σ values`, summed in `LANES` interleaved partial sums.
#[inline(always)]
pub fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ a·b`, summed in `LANES` interleaved partial sums (`b − 0` is `b` exactly, and the
/// compiler drops the subtraction).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_centred(a, b, 0.0)
}

/// `Σ a·(b − centre)`, summed in `LANES` interleaved partial sums.
#[inline(always)]
pub fn dot_centred(a: &[f32], b: &[f32], centre: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(a, b)| a * (b - centre))
        .sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((lane, a), b) in lanes.iter_mut().zip(a).zip(b) {
            *lane += a * (b - centre);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The largest value (`-∞` for none), in `LANES` partial maxima.
#[inline(always)]
pub fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    lanes.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

/// `Σ e^(v − shift)` over `values`, in `LANES` partial sums, without writing anything.
#[inline(always)]
pub fn sum_exp(values: &[f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| exp(v - shift)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += exp(v - shift);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `values[i] = e^(values[i] · scale − shift)` in place; returns their sum.
#[inline(always)]
pub fn exp_in_place(values: &mut [f32], scale: f32, shift: f32) -> f32 {
    for v in values.iter_mut() {
        *v = exp(*v * scale - shift);
    }
    sum(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_standard_library() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = x.exp();
            let got = exp(x);
            assert!(
                ((got - want) / want).abs() < 1e-6,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn reductions_match_plain_loops() {
        // Lengths around the lane count, so the remainder is exercised.
        for len in [0, 1, 7, 8, 9, 23, 64] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0)
                .collect();
            let plain_sum: f32 = a.iter().sum();
            let plain_dot: f32 = a.iter().zip(&b).map(|(a, b)| a * b).sum();
            let plain_max = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert!((sum(&a) - plain_sum).abs() <= 1e-5, "sum, length {len}");
            assert!((dot(&a, &b) - plain_dot).abs() <= 1e-5, "dot, length {len}");
            let plain_centred: f32 = a.iter().zip(&b).map(|(a, b)| a * (b - 0.5)).sum();
            assert!(
                (dot_centred(&a, &b, 0.5) - plain_centred).abs() <= 1e-5,
                "dot_centred, length {len}"
            );
            assert_eq!(max(&a), plain_max, "max, length {len}");
            let plain_sum_exp: f32 = a.iter().map(|v| (v - 1.0).exp()).sum();
            assert!(
                (sum_exp(&a, 1.0) - plain_sum_exp).abs() <= 1e-5 * plain_sum_exp.max(1.0),
                "sum_exp, length {len}"
            );
        }
    }

    #[test]
    fn erf_matches_a_reference_series() {
        // erf by its Taylor series in f64, accurate for |x| <= 3 with enough terms.
        let reference = |x: f64| {
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        for i in -300..=300 {
            let x = i as f64 / 100.0;
            let got = erf(x as f32) as f64;
            assert!(
                (got - reference(x)).abs() < 3e-7,
                "erf({x}) = {got}, want {}",
                reference(x)
            );
        }
    }
}
