//! The CloudWatch Logs Insights language: syntax tree, parser, compiler to DataFusion.

pub mod ast;
pub mod compile;
pub mod parser;

pub use parser::{parse, SyntaxError};
