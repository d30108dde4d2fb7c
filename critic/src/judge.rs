//! One critique: quality checks, the CLIP alignment check, and the
//! aggregate score and summary.

use std::time::Instant;

use image::RgbImage;
use redraft_proto::Critique;

use crate::model::ClipScorer;
use crate::score::{Calibration, aggregate, alignment_check, summary};
use crate::{CriticError, quality};

/// A loaded critic model with its calibration.
pub struct Judge {
    scorer: ClipScorer,
    calibration: Calibration,
}

impl Judge {
    /// Wraps a loaded model and its calibration.
    pub fn new(scorer: ClipScorer, calibration: Calibration) -> Self {
        Self {
            scorer,
            calibration,
        }
    }

    /// The CLIP model.
    pub fn scorer(&self) -> &ClipScorer {
        &self.scorer
    }

    /// Judges `image` against `prompt`.
    pub fn critique(&self, prompt: &str, image: &RgbImage) -> Result<Critique, CriticError> {
        let started = Instant::now();
        let mut checks = quality::quality_checks(image);
        let cosine = self.scorer.cosine(prompt, image)?;
        checks.insert(0, alignment_check(prompt, cosine, &self.calibration));
        let (score, hard_checks_passed) = aggregate(&checks);
        Ok(Critique {
            score,
            summary: summary(&checks),
            checks,
            seconds: started.elapsed().as_secs_f64(),
            hard_checks_passed,
        })
    }
}
