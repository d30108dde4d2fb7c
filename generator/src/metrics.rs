//! The generator's own metrics, beside the RPC counters every actor has.

use redraft_proto::GenerateResult;

const QUEUE_DEPTH: &str = "redraft_generator_queue_depth";
const IMAGES_TOTAL: &str = "redraft_generator_images_total";
const STAGE_SECONDS: &str = "redraft_generator_stage_seconds";

/// Describes the generator metrics; call once at start-up.
pub fn describe() {
    metrics::describe_gauge!(QUEUE_DEPTH, "Requests waiting for the model thread.");
    metrics::describe_counter!(IMAGES_TOTAL, "Images generated.");
    metrics::describe_histogram!(
        STAGE_SECONDS,
        metrics::Unit::Seconds,
        "Time per pipeline stage (queue, text_encode, denoise, decode)."
    );
}

pub(crate) fn queue_depth(depth: usize) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

pub(crate) fn image_done(result: &GenerateResult) {
    metrics::counter!(IMAGES_TOTAL).increment(1);
    if let Some(timings) = &result.timings {
        for (stage, seconds) in [
            ("queue", timings.queue_seconds),
            ("text_encode", timings.text_encode_seconds),
            ("denoise", timings.denoise_seconds),
            ("decode", timings.decode_seconds),
        ] {
            metrics::histogram!(STAGE_SECONDS, "stage" => stage).record(seconds);
        }
    }
}
