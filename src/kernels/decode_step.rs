//! From the model's tensors to [`super::decode`]'s slices and back: the Flex buffers of every
//! weight borrowed as they are, the cache's buffers written in place, the logits made a tensor.

#[cfg(feature = "flex")]
use burn::backend::flex::FlexTensor;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
#[cfg(feature = "flex")]
use burn::tensor::{DType, TensorData};

#[cfg(feature = "flex")]
use super::decode::{self, Dense, Layer, LayerCache, Norm, Scratch, Step};
#[cfg(feature = "flex")]
use super::flex::{into_tensor, values_mut};

/// One block of the step: its weights and its layer of the cache.
pub struct StepLayer<'a> {
    /// Layer norm before attention.
    pub ln_1: &'a LayerNorm,
    /// Query, key and value projections.
    pub qkv: [&'a Linear; 3],
    /// Output projection `W_O`.
    pub output: &'a Linear,
    /// Layer norm before the MLP.
    pub ln_2: &'a LayerNorm,
    /// The MLP's two layers.
    pub mlp: [&'a Linear; 2],
    /// GELU's tanh form.
    pub approximate_gelu: bool,
    /// ε of both layer norms.
    pub eps: f64,
    /// The layer's key and value buffers, `[B, H_kv, capacity, Dh]`.
    pub cache: [&'a mut Tensor<4>; 2],
}

/// The whole network for one step.
pub struct StepModel<'a> {
    /// Token embedding `[V, D]`.
    pub token_embedding: Tensor<2>,
    /// Learned position embedding `[P, D]`, if the model has one.
    pub position_embedding: Option<Tensor<2>>,
    /// The blocks in order.
    pub layers: Vec<StepLayer<'a>>,
    /// Final layer norm and its ε.
    pub ln_f: (&'a LayerNorm, f64),
    /// The LM head; `None` when tied to the token embedding.
    pub lm_head: Option<&'a Linear>,
    /// `[H, H_kv]`.
    pub heads: [usize; 2],
}

/// Where the step's rows are.
pub struct StepRows<'a> {
    /// The new token of each row, `[B]`.
    pub tokens: &'a [usize],
    /// Each row's position (`[1]` when all rows share it, `[B]` otherwise).
    pub positions: &'a [usize],
    /// Cache slot of the new keys and values.
    pub slot: usize,
    /// Keys seen after the write, slots `0..visible`.
    pub visible: usize,
    /// Per row, its first visible slot (its left padding).
    pub first_visible: &'a [usize],
    /// RoPE's tables for the new position, `[1 or B, 1, 1, Dh/2]` cosines and sines.
    pub rotation: Option<[Tensor<4>; 2]>,
}

/// The step, or `None` (before anything is written) when a tensor is not a Flex `f32` one or a
/// layer norm has no shift: the caller then runs the model op by op.
///
/// # Shapes
/// - output: logits `[B, 1, V]`
#[cfg(feature = "flex")]
pub fn run(model: StepModel, rows: &StepRows) -> Option<Tensor<3>> {
    let device = model.token_embedding.device();
    let [heads, kv_heads] = model.heads;
    // Every tensor borrowed (or made contiguous) first, so that a refusal leaves the cache as
    // it was.
    let embedding = flex(model.token_embedding)?;
    let positions = match model.position_embedding {
        Some(table) => Some(flex(table)?),
        None => None,
    };
    let rotation = match &rows.rotation {
        Some([cos, sin]) => Some([flex(cos.clone())?, flex(sin.clone())?]),
        None => None,
    };
    let final_norm = norm_tensors(model.ln_f.0)?;
    let head = match model.lm_head {
        Some(head) => Some(dense_tensors(head)?),
        None => None,
    };
    let weights = model
        .layers
        .iter()
        .map(LayerTensors::new)
        .collect::<Option<Vec<_>>>()?;
    if model
        .layers
        .iter()
        .any(|layer| layer.cache.iter().any(|b| !is_f32(b)))
    {
        return None;
    }

    let [vocab, width] = [
        super::flex::dims(&embedding)[0],
        super::flex::dims(&embedding)[1],
    ];
    let batch = rows.tokens.len();
    let embedding = slice(&embedding);
    let mut x = vec![0.0f32; batch * width];
    for (row, (x, &token)) in x.chunks_mut(width).zip(rows.tokens).enumerate() {
        x.copy_from_slice(&embedding[token * width..][..width]);
        if let Some(table) = &positions {
            let position = rows.positions[row.min(rows.positions.len() - 1)];
            for (x, p) in x.iter_mut().zip(&slice(table)[position * width..][..width]) {
                *x += p;
            }
        }
    }

    let mut scratch = {
        let first = weights.first()?.views(false, 0.0);
        Scratch::new(x, width, first.key.outputs, first.fc.outputs, rows.visible)
    };
    for (layer, tensors) in model.layers.into_iter().zip(&weights) {
        let views = tensors.views(layer.approximate_gelu, layer.eps);
        let [key_buffer, value_buffer] = layer.cache;
        let step = Step {
            heads,
            kv_heads,
            head_dim: width / heads,
            capacity: key_buffer.dims()[2],
            slot: rows.slot,
            visible: rows.visible,
            first_visible: rows.first_visible,
            rotation: rotation.as_ref().map(|[cos, sin]| (slice(cos), slice(sin))),
        };
        // Taken out of the cache (a cheap empty tensor left behind) so that the buffers are
        // uniquely owned and written in place, then put back.
        let placeholder = || Tensor::<4>::empty([0, 0, 0, 0], &device);
        let mut keys = flex(std::mem::replace(key_buffer, placeholder()))?;
        let mut values = flex(std::mem::replace(value_buffer, placeholder()))?;
        let cache = LayerCache {
            key: values_mut(&mut keys),
            value: values_mut(&mut values),
        };
        decode::layer(&views, cache, &step, &mut scratch);
        *key_buffer = into_tensor(keys);
        *value_buffer = into_tensor(values);
    }
    let x = scratch.finish();

    let mut h = vec![0.0f32; batch * width];
    decode::norm(&x, &norm_view(&final_norm, model.ln_f.1), &mut h);
    let mut logits = vec![0.0f32; batch * vocab];
    match &head {
        Some(head) => {
            let dense = dense_view(head);
            logits.resize(batch * dense.outputs, 0.0);
            decode::dense_head(&h, &dense, &mut logits);
        }
        None => decode::tied_head(&h, embedding, width, &mut logits),
    }
    let vocab = logits.len() / batch;
    Some(Tensor::from_data(
        TensorData::new(logits, [batch, 1, vocab]),
        &device,
    ))
}

/// The contiguous `f32` Flex tensor under `tensor`; `None` on another backend or under
/// autodiff.
#[cfg(feature = "flex")]
fn flex<const D: usize>(tensor: Tensor<D>) -> Option<FlexTensor> {
    let tensor = super::flex::from_tensor(tensor)?;
    if tensor.dtype() != DType::F32 {
        return None;
    }
    Some(match tensor.as_slice::<f32>() {
        Some(_) => tensor,
        None => tensor.to_contiguous(),
    })
}

#[cfg(feature = "flex")]
fn is_f32(tensor: &Tensor<4>) -> bool {
    tensor.dtype() == DType::F32
}

/// A tensor from [`flex`]: contiguous `f32`.
#[cfg(feature = "flex")]
fn slice(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("a contiguous f32 tensor")
}

#[cfg(feature = "flex")]
fn norm_tensors(norm: &LayerNorm) -> Option<[FlexTensor; 2]> {
    Some([flex(norm.gamma.val())?, flex(norm.beta.as_ref()?.val())?])
}

#[cfg(feature = "flex")]
fn norm_view(tensors: &[FlexTensor; 2], eps: f64) -> Norm<'_> {
    Norm {
        gamma: slice(&tensors[0]),
        beta: slice(&tensors[1]),
        eps: eps as f32,
    }
}

/// A linear layer's weight, its bias if it has one, and its output width.
#[cfg(feature = "flex")]
struct DenseTensors {
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    outputs: usize,
}

#[cfg(feature = "flex")]
fn dense_tensors(layer: &Linear) -> Option<DenseTensors> {
    Some(DenseTensors {
        weight: flex(layer.weight.val())?,
        bias: match &layer.bias {
            Some(bias) => Some(flex(bias.val())?),
            None => None,
        },
        outputs: layer.weight.dims()[1],
    })
}

#[cfg(feature = "flex")]
fn dense_view(tensors: &DenseTensors) -> Dense<'_> {
    Dense {
        weight: slice(&tensors.weight),
        bias: tensors.bias.as_ref().map(slice),
        outputs: tensors.outputs,
    }
}

/// One layer's weights as Flex tensors (held while the slices borrow them).
#[cfg(feature = "flex")]
struct LayerTensors {
    norms: [[FlexTensor; 2]; 2],
    /// Query, key, value, output, fc, proj.
    dense: [DenseTensors; 6],
}

#[cfg(feature = "flex")]
impl LayerTensors {
    fn new(layer: &StepLayer) -> Option<Self> {
        let [query, key, value] = layer.qkv;
        let [fc, proj] = layer.mlp;
        Some(Self {
            norms: [norm_tensors(layer.ln_1)?, norm_tensors(layer.ln_2)?],
            dense: [
                dense_tensors(query)?,
                dense_tensors(key)?,
                dense_tensors(value)?,
                dense_tensors(layer.output)?,
                dense_tensors(fc)?,
                dense_tensors(proj)?,
            ],
        })
    }

    fn views(&self, approximate_gelu: bool, eps: f64) -> Layer<'_> {
        let [query, key, value, output, fc, proj] = self.dense.each_ref().map(dense_view);
        Layer {
            ln_1: norm_view(&self.norms[0], eps),
            query,
            key,
            value,
            output,
            ln_2: norm_view(&self.norms[1], eps),
            fc,
            proj,
            approximate_gelu,
        }
    }
}

/// Without Flex there is nothing for the step to run on.
#[cfg(not(feature = "flex"))]
pub fn run(model: StepModel, rows: &StepRows) -> Option<Tensor<3>> {
    let _ = (model, rows);
    None
}
