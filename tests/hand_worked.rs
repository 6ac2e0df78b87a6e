//! One head, three tokens, every number derived by hand in the comments.

mod common;

use std::f32::consts::E;

use burn::tensor::{Tensor, TensorData};
use common::{device, values};
use tinygpt::MaskMode;
use tinygpt::model::single_head_attention;

fn matrix(rows: &[&[f32]], device: &burn::tensor::Device) -> Tensor<3> {
    let (n, m) = (rows.len(), rows[0].len());
    let flat: Vec<f32> = rows.iter().flat_map(|row| row.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [1, n, m]), device)
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-6, "element {i}: got {g}, want {w}");
    }
}

#[test]
fn three_token_single_head_example_matches_the_hand_derivation() {
    let device = device();
    // Head width d = 4, so the scale is 1 / sqrt(4) = 1/2.
    let q = matrix(
        &[&[1., 0., 0., 0.], &[1., 0., 0., 0.], &[1., 1., 0., 0.]],
        &device,
    );
    let k = matrix(
        &[&[0., 0., 0., 0.], &[2., 0., 0., 0.], &[0., 2., 0., 0.]],
        &device,
    );
    let v = matrix(&[&[1., 0.], &[0., 1.], &[1., 1.]], &device);

    let (output, weights) = single_head_attention(q, k, v, MaskMode::Causal);

    // Scores q_i · k_j / 2:
    //   row 0: [0, 2, 0] / 2 = [0, 1, 0]
    //   row 1: [0, 2, 0] / 2 = [0, 1, 0]
    //   row 2: [0, 2, 2] / 2 = [0, 1, 1]
    // The causal mask puts -inf on j > i, so:
    //   row 0: softmax([0, -inf, -inf]) = [1, 0, 0]
    //   row 1: softmax([0, 1, -inf])    = [1, e, 0] / (1 + e)
    //   row 2: softmax([0, 1, 1])       = [1, e, e] / (1 + 2e)
    // Without the mask row 0 would be [1, e, 1] / (2 + e): token 0 would see token 1.
    let w1 = [1. / (1. + E), E / (1. + E), 0.];
    let w2 = [1. / (1. + 2. * E), E / (1. + 2. * E), E / (1. + 2. * E)];
    #[rustfmt::skip]
    let expected_weights = [
        1., 0., 0.,
        w1[0], w1[1], w1[2],
        w2[0], w2[1], w2[2],
    ];
    assert_close(&values(weights), &expected_weights);

    // Output row i = sum_j w_ij v_j with v = [1,0], [0,1], [1,1]:
    //   row 0: v_0                         = [1, 0]
    //   row 1: w1_0 [1,0] + w1_1 [0,1]     = [1/(1+e), e/(1+e)]        ≈ [0.26894, 0.73106]
    //   row 2: w2_0 [1,0] + w2_1 [0,1] + w2_2 [1,1]
    //        = [(1+e)/(1+2e), 2e/(1+2e)]                               ≈ [0.57768, 0.84464]
    #[rustfmt::skip]
    let expected_output = [
        1., 0.,
        w1[0], w1[1],
        w2[0] + w2[2], w2[1] + w2[2],
    ];
    assert_close(&values(output), &expected_output);
    assert!((expected_output[4] - 0.577_681).abs() < 1e-6);
    assert!((expected_output[5] - 0.844_638).abs() < 1e-6);
}
