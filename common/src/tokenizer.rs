//! Word-level CLIP-style tokenizers: building the `tokenizer.json` of the
//! tiny and shapes models, and encoding prompts to fixed-length token ids.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::normalizers::utils::{Lowercase, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Model, SplitDelimiterBehavior, Tokenizer};

/// Padding token; id 0 in the word-level vocabularies built here.
pub const PAD_TOKEN: &str = "<|pad|>";
/// Unknown-word token; id 1.
pub const UNK_TOKEN: &str = "<|unk|>";
/// Start-of-text token; id 2.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// End-of-text token; always the largest id, because CLIP's text model pools
/// the hidden state at the position of the largest input id.
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// Words of simple scene prompts ("a photo of two red circles left of a
/// blue square"): the vocabulary of the tiny random-weight models.
pub const SCENE_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "photo",
    "picture",
    "image",
    "of",
    "and",
    "with",
    "in",
    "on",
    "at",
    "is",
    "are",
    "that",
    "left",
    "right",
    "above",
    "below",
    "under",
    "over",
    "next",
    "to",
    "top",
    "side",
    "front",
    "behind",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "pink",
    "brown",
    "gray",
    "grey",
    "circle",
    "circles",
    "square",
    "squares",
    "triangle",
    "triangles",
    "shape",
    "shapes",
    "blob",
    "blobs",
    "cat",
    "cats",
    "dog",
    "dogs",
    "car",
    "cars",
    "apple",
    "apples",
    "bench",
    "benches",
    "tree",
    "trees",
    "house",
    "houses",
    "ball",
    "balls",
    "box",
    "boxes",
    "small",
    "large",
    "big",
    "bright",
    "dark",
    ",",
    ".",
];

/// Errors from loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer file is missing or does not parse.
    #[error("failed to load tokenizer {path}: {message}")]
    Load { path: String, message: String },
    /// The tokenizer lacks a token the encoder needs.
    #[error("tokenizer {path} has no {token} token")]
    MissingToken { path: String, token: &'static str },
    /// Encoding a prompt failed.
    #[error("failed to tokenize prompt: {0}")]
    Encode(String),
}

/// Builds a lower-casing, whitespace-splitting word-level tokenizer whose
/// vocabulary is the special tokens plus `words` (duplicates ignored), with
/// `<|startoftext|>` and `<|endoftext|>` added around every text.
pub fn build_word_level(words: &[&str]) -> Tokenizer {
    let mut vocab = ahash::AHashMap::new();
    for token in [PAD_TOKEN, UNK_TOKEN, BOS_TOKEN] {
        let id = vocab.len() as u32;
        vocab.insert(token.to_string(), id);
    }
    for word in words {
        let word = word.to_lowercase();
        if !vocab.contains_key(&word) {
            let id = vocab.len() as u32;
            vocab.insert(word, id);
        }
    }
    let eos_id = vocab.len() as u32;
    vocab.insert(EOS_TOKEN.to_string(), eos_id);

    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token(UNK_TOKEN.to_string())
        .build()
        .expect("a vocabulary that contains its unknown token is valid");
    let post_processor = TemplateProcessing::builder()
        .try_single(format!("{BOS_TOKEN} $A {EOS_TOKEN}"))
        .expect("the template is valid")
        .special_tokens(vec![(BOS_TOKEN, 2), (EOS_TOKEN, eos_id)])
        .build()
        .expect("the template names only registered special tokens");

    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(Lowercase))
        .expect("lower-casing is a valid normalizer");
    tokenizer.with_pre_tokenizer(Some(Whitespace));
    tokenizer.with_post_processor(Some(post_processor));
    let special = [PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN]
        .map(|token| AddedToken::from(token.to_string(), true));
    tokenizer
        .add_special_tokens(special)
        .expect("the special tokens are in the vocabulary");
    tokenizer
}

/// CLIP's pre-tokenizer pattern: contractions, letter runs, single digits,
/// and runs of other non-space characters.
const CLIP_SPLIT_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Builds CLIP's byte-level BPE tokenizer from the `vocab.json` and
/// `merges.txt` that diffusers folders ship in `tokenizer/`: NFC, collapsed
/// whitespace and lower case, CLIP's split pattern, byte-level BPE with the
/// `</w>` end-of-word suffix, and `<|startoftext|>` ... `<|endoftext|>`
/// around every text.
///
/// NOTE: this mirrors the `tokenizer.json` that Hugging Face saves for
/// `openai/clip-vit-large-patch14`, but was only checked on small
/// vocabularies, not against Hugging Face's output on the real one.
pub fn build_clip_bpe(vocab: &Path, merges: &Path) -> Result<Tokenizer, TokenizerError> {
    let load_error = |message: String| TokenizerError::Load {
        path: vocab.display().to_string(),
        message,
    };
    let vocab_str = vocab
        .to_str()
        .ok_or_else(|| load_error("the path is not UTF-8".into()))?;
    let merges_str = merges
        .to_str()
        .ok_or_else(|| load_error("the merges path is not UTF-8".into()))?;
    let model = BPE::from_file(vocab_str, merges_str)
        .unk_token(EOS_TOKEN.to_string())
        .end_of_word_suffix("</w>".to_string())
        .build()
        .map_err(|error| load_error(format!("with {}: {error}", merges.display())))?;
    let bos_id = model
        .token_to_id(BOS_TOKEN)
        .ok_or_else(|| load_error(format!("no {BOS_TOKEN} token")))?;
    let eos_id = model
        .token_to_id(EOS_TOKEN)
        .ok_or_else(|| load_error(format!("no {EOS_TOKEN} token")))?;

    let whitespace = Replace::new(
        tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".to_string()),
        " ",
    )
    .map_err(|error| load_error(error.to_string()))?;
    let normalizer = NormalizerSequence::new(vec![NFC.into(), whitespace.into(), Lowercase.into()]);
    let split = Split::new(
        SplitPattern::Regex(CLIP_SPLIT_PATTERN.to_string()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|error| load_error(error.to_string()))?;
    let pre_tokenizer = PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ]);
    let post_processor = RobertaProcessing::new(
        (EOS_TOKEN.to_string(), eos_id),
        (BOS_TOKEN.to_string(), bos_id),
    )
    .trim_offsets(false)
    .add_prefix_space(false);

    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|error| load_error(error.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_post_processor(Some(post_processor));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer
        .add_special_tokens(
            [BOS_TOKEN, EOS_TOKEN].map(|token| AddedToken::from(token.to_string(), true)),
        )
        .map_err(|error| load_error(error.to_string()))?;
    Ok(tokenizer)
}

/// The `pad_token` of a Hugging Face tokenizer folder: from
/// `special_tokens_map.json`, else `tokenizer_config.json`, as a string or
/// an object with `content`.
fn configured_pad_token(dir: &Path) -> Option<String> {
    ["special_tokens_map.json", "tokenizer_config.json"]
        .iter()
        .find_map(|file| {
            let text = std::fs::read_to_string(dir.join(file)).ok()?;
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            let pad = value.get("pad_token")?;
            pad.as_str()
                .or_else(|| pad.get("content")?.as_str())
                .map(str::to_string)
        })
}

/// Encodes prompts into fixed-length id sequences for a CLIP text model.
///
/// Sequences are truncated to `max_len` (keeping the end-of-text token last)
/// and padded with the tokenizer's `<|pad|>` token, or with `<|endoftext|>`
/// where the vocabulary has no pad token, as in OpenAI's CLIP vocabulary.
/// Words missing from the vocabulary are logged once each.
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    max_len: usize,
    pad_id: u32,
    eos_id: u32,
    unk_id: Option<u32>,
    reported_unknown: Mutex<HashSet<String>>,
}

impl PromptTokenizer {
    /// Loads `path` (a `tokenizer.json`) and encodes to `max_len` ids.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, TokenizerError> {
        let display = path.display().to_string();
        let tokenizer = Tokenizer::from_file(path).map_err(|error| TokenizerError::Load {
            path: display.clone(),
            message: error.to_string(),
        })?;
        Self::new(tokenizer, display, max_len)
    }

    /// Loads `path` (a `tokenizer.json`) when it exists, else CLIP's BPE
    /// tokenizer from the `vocab.json` and `merges.txt` beside it, as
    /// diffusers folders ship them.
    ///
    /// The pad token named by `special_tokens_map.json` or
    /// `tokenizer_config.json` beside it, when the vocabulary has it,
    /// replaces the default pad token: SD 2.x and SDXL's second tokenizer
    /// pad with "!".
    pub fn from_file_or_bpe(path: &Path, max_len: usize) -> Result<Self, TokenizerError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tokenizer = Self::load_file_or_bpe(path, dir, max_len)?;
        if let Some(pad) = configured_pad_token(dir)
            && let Some(id) = tokenizer.tokenizer.token_to_id(&pad)
        {
            tokenizer.pad_id = id;
        }
        Ok(tokenizer)
    }

    fn load_file_or_bpe(path: &Path, dir: &Path, max_len: usize) -> Result<Self, TokenizerError> {
        if path.is_file() {
            return Self::from_file(path, max_len);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if !vocab.is_file() || !merges.is_file() {
            return Err(TokenizerError::Load {
                path: path.display().to_string(),
                message: "not found, and vocab.json with merges.txt is not beside it either"
                    .to_string(),
            });
        }
        let tokenizer = build_clip_bpe(&vocab, &merges)?;
        Self::new(tokenizer, vocab.display().to_string(), max_len)
    }

    fn new(tokenizer: Tokenizer, display: String, max_len: usize) -> Result<Self, TokenizerError> {
        let eos_id = tokenizer
            .token_to_id(EOS_TOKEN)
            .ok_or(TokenizerError::MissingToken {
                path: display,
                token: EOS_TOKEN,
            })?;
        let pad_id = tokenizer.token_to_id(PAD_TOKEN).unwrap_or(eos_id);
        let unk_id = tokenizer.token_to_id(UNK_TOKEN);
        Ok(Self {
            tokenizer,
            max_len,
            pad_id,
            eos_id,
            unk_id,
            reported_unknown: Mutex::new(HashSet::new()),
        })
    }

    /// Number of ids every encoded sequence has.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Encodes `text` into exactly `max_len` token ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|error| TokenizerError::Encode(error.to_string()))?;
        self.report_unknown_words(text, &encoding);

        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > self.max_len {
            ids.truncate(self.max_len);
            ids[self.max_len - 1] = self.eos_id;
        }
        ids.resize(self.max_len, self.pad_id);
        Ok(ids)
    }

    fn report_unknown_words(&self, text: &str, encoding: &tokenizers::Encoding) {
        let Some(unk_id) = self.unk_id else { return };
        for (index, id) in encoding.get_ids().iter().enumerate() {
            if *id != unk_id {
                continue;
            }
            let (start, end) = encoding.get_offsets()[index];
            let word = text.get(start..end).unwrap_or_default().to_lowercase();
            let mut reported = self
                .reported_unknown
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if reported.insert(word.clone()) {
                tracing::warn!(%word, "prompt word is not in the tokenizer vocabulary and is encoded as {UNK_TOKEN}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer_file(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("tokenizer.json");
        build_word_level(&["a", "red", "circle"])
            .save(&path, false)
            .unwrap();
        path
    }

    #[test]
    fn clip_bpe_from_vocab_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = serde_json::json!({
            "<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "r": 3, "e": 4,
            "d</w>": 5, "re": 6, "red</w>": 7, "!</w>": 8, "2</w>": 9,
        });
        std::fs::write(dir.path().join("vocab.json"), vocab.to_string()).unwrap();
        std::fs::write(
            dir.path().join("merges.txt"),
            "#version: 0.2\nr e\nre d</w>\n",
        )
        .unwrap();

        // No tokenizer.json: the BPE files beside it are used.
        let tokenizer =
            PromptTokenizer::from_file_or_bpe(&dir.path().join("tokenizer.json"), 8).unwrap();
        // Lower case, collapsed spaces, punctuation split off, merges applied,
        // and padding with <|endoftext|> because the vocabulary has no pad token.
        assert_eq!(
            tokenizer.encode("A   Red!").unwrap(),
            vec![0, 2, 7, 8, 1, 1, 1, 1]
        );
        // A digit is a word of its own.
        assert_eq!(
            tokenizer.encode("a 2").unwrap(),
            vec![0, 2, 9, 1, 1, 1, 1, 1]
        );

        // A configured pad token replaces <|endoftext|> as padding.
        std::fs::write(
            dir.path().join("special_tokens_map.json"),
            r#"{"pad_token": {"content": "!</w>", "lstrip": false}}"#,
        )
        .unwrap();
        let tokenizer =
            PromptTokenizer::from_file_or_bpe(&dir.path().join("tokenizer.json"), 6).unwrap();
        assert_eq!(tokenizer.encode("a").unwrap(), vec![0, 2, 1, 8, 8, 8]);
    }

    #[test]
    fn clip_bpe_missing_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = PromptTokenizer::from_file_or_bpe(&dir.path().join("tokenizer.json"), 8)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("tokenizer.json"), "{error}");
        assert!(error.contains("vocab.json with merges.txt"), "{error}");
    }

    #[test]
    fn encode_wraps_and_pads() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = PromptTokenizer::from_file(&tokenizer_file(dir.path()), 8).unwrap();
        let ids = tokenizer.encode("A Red circle").unwrap();
        // pad 0, unk 1, bos 2, a 3, red 4, circle 5, eos 6
        assert_eq!(ids, vec![2, 3, 4, 5, 6, 0, 0, 0]);
    }

    #[test]
    fn unknown_words_become_unk() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = PromptTokenizer::from_file(&tokenizer_file(dir.path()), 6).unwrap();
        assert_eq!(
            tokenizer.encode("a blue circle").unwrap(),
            vec![2, 3, 1, 5, 6, 0]
        );
    }

    #[test]
    fn long_prompt_keeps_eos_last() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = PromptTokenizer::from_file(&tokenizer_file(dir.path()), 4).unwrap();
        assert_eq!(
            tokenizer.encode("a red red red circle").unwrap(),
            vec![2, 3, 4, 6]
        );
    }

    #[test]
    fn missing_file_names_path() {
        let error = PromptTokenizer::from_file(Path::new("/nonexistent/tokenizer.json"), 4)
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("/nonexistent/tokenizer.json"),
            "{error}"
        );
    }
}
