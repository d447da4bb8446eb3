//! Model implementations, one per file.

pub mod llama_gguf;
