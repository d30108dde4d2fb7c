//! The redraft critic: judges an image against its prompt with a CLIP model
//! and with image-quality checks.

pub mod error;
pub mod model;
pub mod quality;
pub mod score;
pub mod tiny;

pub use error::CriticError;
pub use model::ClipScorer;
pub use score::{Calibration, aggregate, alignment_check, summary};
