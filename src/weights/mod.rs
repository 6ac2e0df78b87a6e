//! Weights that travel, as safetensors: tinygpt's own layout (export, and load back with the
//! config and vocabulary the file carries), and import of models trained with nanoGPT.
//!
//! | file          | what it holds                                                          |
//! |---------------|------------------------------------------------------------------------|
//! | `safetensors` | tinygpt's layout (PyTorch conventions), export and load               |
//! | `nanogpt`     | nanoGPT's names and fused `c_attn` mapped onto tinygpt's layout        |
//! | `file`        | reading any safetensors file: tensors, metadata, the layout check      |

mod file;
pub mod nanogpt;
pub mod safetensors;

pub use file::TensorSpec;
pub use nanogpt::import_nanogpt;
pub use safetensors::{
    CONFIG_KEY, VOCABULARY_KEY, export_safetensors, load_safetensors, read_exported_header,
    tensor_layout,
};
