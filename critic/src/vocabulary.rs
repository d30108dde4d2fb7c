//! Which prompt words the model's tokenizer vocabulary contains. Probe variants built from
//! unknown words would all encode to the same unknown-word token, so the
//! probes leave them out instead of comparing them.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use redraft_common::tokenizer::{TokenizerError, UNK_TOKEN};
use tokenizers::Tokenizer;

/// The vocabulary of a model folder's `tokenizer.json`.
pub struct Vocabulary {
    tokenizer: Tokenizer,
    /// Id of `<|unk|>`; `None` for tokenizers without one, such as OpenAI
    /// CLIP's byte-level BPE, which can encode every word.
    unknown_id: Option<u32>,
    reported: Mutex<HashSet<String>>,
}

impl Vocabulary {
    /// Loads the tokenizer file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let tokenizer = Tokenizer::from_file(path).map_err(|error| TokenizerError::Load {
            path: path.display().to_string(),
            message: error.to_string(),
        })?;
        let unknown_id = tokenizer.token_to_id(UNK_TOKEN);
        Ok(Self {
            tokenizer,
            unknown_id,
            reported: Mutex::new(HashSet::new()),
        })
    }

    /// Returns the words of `text` that encode to the unknown-word token,
    /// lower-cased, in order and without repeats.
    pub fn unknown_words(&self, text: &str) -> Vec<String> {
        let Some(unknown_id) = self.unknown_id else {
            return Vec::new();
        };
        let Ok(encoding) = self.tokenizer.encode(text, false) else {
            // An encoding failure surfaces when the text is embedded.
            return Vec::new();
        };
        let mut words: Vec<String> = Vec::new();
        for (index, id) in encoding.get_ids().iter().enumerate() {
            if *id != unknown_id {
                continue;
            }
            let (start, end) = encoding.get_offsets()[index];
            let word = text.get(start..end).unwrap_or_default().to_lowercase();
            if !words.contains(&word) {
                words.push(word);
            }
        }
        words
    }

    /// Returns whether every word of `text` is in the vocabulary.
    pub fn knows(&self, text: &str) -> bool {
        self.unknown_words(text).is_empty()
    }

    /// Logs each of `words` as left out of the probes, once per word for
    /// the life of the model.
    pub fn report_unknown(&self, words: &[String]) {
        let mut reported = self
            .reported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for word in words {
            if reported.insert(word.clone()) {
                tracing::warn!(%word, "word is not in the critic's tokenizer vocabulary; probes that need it are skipped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use redraft_common::tokenizer::build_word_level;

    use super::*;

    #[test]
    fn unknown_words_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        build_word_level(&["a", "red", "circle"])
            .save(&path, false)
            .unwrap();
        let vocabulary = Vocabulary::from_file(&path).unwrap();
        assert!(vocabulary.knows("A red circle"));
        assert_eq!(
            vocabulary.unknown_words("a Zebra and a zebra and a hat"),
            vec!["zebra", "and", "hat"]
        );
    }
}
