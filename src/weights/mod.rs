//! Weights that travel, as safetensors: tinygpt's own layout (export, and load back with the
//! config and vocabulary the file carries), import of models trained with nanoGPT, and Hugging
//! Face GPT-2 in and out.
//!
//! | file          | what it holds                                                          |
//! |---------------|------------------------------------------------------------------------|
//! | `safetensors` | tinygpt's layout (PyTorch conventions), export and load               |
//! | `nanogpt`     | nanoGPT's names and fused `c_attn` mapped onto tinygpt's layout        |
//! | `hf`          | Hugging Face GPT-2 (`GPT2LMHeadModel`) directories, in and out         |
//! | `file`        | reading any safetensors file: tensors, metadata, the layout check      |

mod file;
pub mod hf;
pub mod nanogpt;
pub mod safetensors;

pub use file::TensorSpec;
pub use hf::{export_hf, import_hf};
pub use nanogpt::import_nanogpt;
pub use safetensors::{
    CONFIG_KEY, TOKENIZER_KEY, VOCABULARY_KEY, export_safetensors, load_safetensors,
    read_exported_header, tensor_layout,
};
