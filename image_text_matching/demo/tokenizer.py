"""A word-level tokenizer built locally from a list of sentences (the offline demo's "CLIP vocab").

No pretrained tokenizer is reachable offline, and the demo's captions use a dozen words, so the
vocabulary is simply every word of the captions. The tokenizer is a ``tokenizers`` ``WordLevel``
model (lower-cased, split on whitespace) wrapped as a ``transformers`` fast tokenizer with
``<pad>`` / ``<bos>`` / ``<eos>`` / ``<unk>``; every encoded sentence is
``<bos> words... <eos>`` padded with ``<pad>``, as CLIP's text encoder expects.

The one rule: the vocabulary is a pure function of the sentences (sorted words after the four
special tokens at ids 0..3), so two builds from the same captions give the same ids, and the
tokenizer is saved with ``save_pretrained`` so that ``AutoTokenizer.from_pretrained(folder)``
and the pipeline loader (``common.teachers.loading``) read it back like any downloaded one.
"""
SPECIAL_TOKENS = ('<pad>', '<bos>', '<eos>', '<unk>')
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


def caption_words(sentences):
    """The sorted, lower-cased, de-duplicated words of ``sentences`` (the vocabulary body)."""
    if isinstance(sentences, str):
        raise TypeError(f'caption_words needs a list of sentences, got the single string '
                        f'{sentences!r}; wrap it in a list.')
    words = sorted({w for s in sentences for w in str(s).lower().split()})
    clash = sorted(set(words) & set(SPECIAL_TOKENS))
    if clash:
        raise ValueError(f'The sentences contain the special token(s) {clash}, which the word '
                         f'tokenizer reserves for padding and sentence boundaries; remove them '
                         f'from the captions.')
    return words


def build_word_tokenizer(sentences, model_max_length=8):
    """A ``transformers`` fast tokenizer whose vocabulary is the words of ``sentences``.

    Args:
        sentences (list[str]): every caption the tokenizer must spell (unknown words later map to
            ``<unk>``).
        model_max_length (int): the padded length (``<bos>`` and ``<eos>`` included); the text
            encoder's ``max_position_embeddings`` must be at least this.

    Returns:
        transformers.PreTrainedTokenizerFast: save it with ``save_pretrained(folder)``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = caption_words(sentences)
    if not words:
        raise ValueError('build_word_tokenizer got no words: pass the captions the model will '
                         'read (e.g. ["a handwritten zero", ..., "a handwritten nine"]).')
    longest = max(len(str(s).split()) for s in sentences) + 2
    if int(model_max_length) < longest:
        raise ValueError(f'model_max_length={model_max_length} is shorter than the longest '
                         f'caption plus <bos>/<eos> ({longest} tokens); raise it to at least '
                         f'{longest} so that no caption is truncated.')
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token='<unk>'))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single='<bos> $A <eos>', special_tokens=[('<bos>', BOS_ID), ('<eos>', EOS_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token='<bos>',
                                   eos_token='<eos>', pad_token='<pad>', unk_token='<unk>',
                                   model_max_length=int(model_max_length))


def text_encoder_ids(tokenizer):
    """The ids a ``CLIPTextConfig`` needs to match ``tokenizer`` (vocab size, pad/bos/eos)."""
    return dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
