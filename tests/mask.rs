//! The causal mask: its orientation, its bottom-right alignment, and what it does to the
//! softmax; and the leaky variants, each leaking the way its name says.

mod common;

use burn::tensor::{Bool, Tensor};
use common::{device, random_tensor, values};
use tinygpt::model::{MaskMode, causal_mask, masked_softmax};

fn bools(mask: Tensor<2, Bool>) -> Vec<Vec<bool>> {
    let [rows, cols] = mask.dims();
    let flat = mask
        .into_data()
        .convert::<bool>()
        .try_into_vec::<bool>()
        .unwrap();
    (0..rows)
        .map(|r| flat[r * cols..(r + 1) * cols].to_vec())
        .collect()
}

/// `visible[i][j]`: may query `i` see key `j` (true = not blocked)?
fn visible(mode: MaskMode, q_len: usize, k_len: usize) -> Vec<Vec<bool>> {
    let device = device();
    let blocked = mode
        .logits_mask(q_len, k_len, &device)
        .map(bools)
        .unwrap_or_else(|| vec![vec![false; k_len]; q_len]);
    blocked
        .into_iter()
        .map(|row| row.into_iter().map(|b| !b).collect())
        .collect()
}

#[test]
fn causal_mask_orientation() {
    // Burn's tril_mask/triu_mask are named for the part they block; this pins down that the
    // causal mask blocks the strict upper triangle (the future), not the lower one.
    let t = true;
    let f = false;
    assert_eq!(
        bools(causal_mask(4, 4, &device())),
        vec![
            vec![f, t, t, t],
            vec![f, f, t, t],
            vec![f, f, f, t],
            vec![f, f, f, f],
        ]
    );
}

fn assert_future_gets_zero_probability(seq: usize) {
    let device = device();
    let scores = random_tensor([1, seq, seq], 7 + seq as u64, &device);
    let weights = values(masked_softmax(scores, MaskMode::Causal, None));
    for i in 0..seq {
        let row = &weights[i * seq..(i + 1) * seq];
        for (j, &w) in row.iter().enumerate() {
            if j > i {
                assert_eq!(w, 0.0, "query {i} gives key {j} (the future) weight {w}");
            } else {
                assert!(w > 0.0, "query {i} gives visible key {j} no weight");
            }
        }
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "row {i} sums to {sum}");
    }
}

#[test]
fn future_positions_get_zero_probability_t4() {
    assert_future_gets_zero_probability(4);
}

#[test]
fn future_positions_get_zero_probability_t5() {
    assert_future_gets_zero_probability(5);
}

#[test]
fn bottom_right_alignment_two_queries_against_five_keys() {
    // Two new queries after three cached positions sit at absolute positions 3 and 4.
    let seen = visible(MaskMode::Causal, 2, 5);
    assert_eq!(seen[0], [true, true, true, true, false]);
    assert_eq!(seen[1], [true, true, true, true, true]);

    // The same through the softmax: query 0 gives key 4 exactly zero weight.
    let device = device();
    let weights = values(masked_softmax(
        random_tensor([1, 2, 5], 3, &device),
        MaskMode::Causal,
        None,
    ));
    assert_eq!(weights[4], 0.0);
    assert!(weights[5..10].iter().all(|&w| w > 0.0));
}

#[test]
fn one_token_decode_sees_every_cached_key() {
    assert_eq!(visible(MaskMode::Causal, 1, 6), vec![vec![true; 6]]);
}

#[test]
fn no_mask_sees_everything() {
    assert_eq!(visible(MaskMode::Unmasked, 4, 4), vec![vec![true; 4]; 4]);
}

#[test]
fn flipped_mask_sees_itself_and_the_future() {
    let seen = visible(MaskMode::Flipped, 4, 4);
    for (i, row) in seen.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            assert_eq!(v, j >= i, "query {i}, key {j}");
        }
    }
}

#[test]
fn off_by_one_mask_sees_one_future_token() {
    let seen = visible(MaskMode::OffByOne, 4, 4);
    for (i, row) in seen.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            assert_eq!(v, j <= i + 1, "query {i}, key {j}");
        }
    }
}

#[test]
fn after_softmax_zeroes_the_future_without_renormalising() {
    let device = device();
    let seq = 4;
    let weights = values(masked_softmax(
        random_tensor([1, seq, seq], 11, &device),
        MaskMode::AfterSoftmax,
        None,
    ));
    for i in 0..seq {
        let row = &weights[i * seq..(i + 1) * seq];
        assert!(row[i + 1..].iter().all(|&w| w == 0.0), "row {i}: {row:?}");
        let sum: f32 = row.iter().sum();
        if i + 1 < seq {
            // The future's share of the softmax is gone, so the row sums to less than one.
            assert!(sum < 1.0 - 1e-3, "row {i} sums to {sum}");
        } else {
            assert!((sum - 1.0).abs() < 1e-6);
        }
    }
}

#[test]
fn mask_mode_names_round_trip() {
    for mode in MaskMode::ALL {
        assert_eq!(MaskMode::from_name(mode.name()), Some(mode));
        let json = serde_json::to_string(&mode).unwrap();
        assert_eq!(json, format!("\"{}\"", mode.name()));
    }
    assert_eq!(MaskMode::from_name("sideways"), None);
}
