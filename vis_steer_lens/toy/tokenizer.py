"""Word-level tokenizer and Gemma 3 processor for the toy world, built locally without the hub."""

from __future__ import annotations

import re

from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
from transformers import Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerFast

from vis_steer_lens.toy import tasks
from vis_steer_lens.toy.world import CATEGORIES, IMAGE_SIZE

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
BOS_TOKEN = "<bos>"
UNK_TOKEN = "<unk>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
BOI_TOKEN = "<start_of_image>"
EOI_TOKEN = "<end_of_image>"
IMAGE_TOKEN = "<image_soft_token>"
# Gemma 3's order for the first four (pad 0, eos 1, bos 2, unk 3); the rest follow directly.
SPECIAL_TOKENS = [
    PAD_TOKEN,
    EOS_TOKEN,
    BOS_TOKEN,
    UNK_TOKEN,
    START_OF_TURN,
    END_OF_TURN,
    BOI_TOKEN,
    EOI_TOKEN,
    IMAGE_TOKEN,
]
NEWLINE = "\n"
PUNCTUATION = [".", ",", "?", "!", ":", ";", "-", "'", '"', "(", ")"]

# Gemma-3-like turns; an image item becomes <start_of_image>, which the processor expands to
# "\n\n<start_of_image>" + soft tokens + "<end_of_image>\n\n".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# Extra words so that close paraphrases of the prompts still tokenize without <unk>.
_EXTRA_WORDS = (
    "user model system image images element elements highlighted what is are do does the a an in of on at "
    "and or all have has common share shared describe blank nothing this these they it with no yes not "
    "left right top bottom center middle background color colour shape texture size position object objects"
)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Newlines are tokens of their own, other whitespace only separates words, punctuation is split off.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )


def world_texts() -> list[str]:
    """Every fixed text the toy world and its tasks use: prompts, answer prefixes, concept words."""
    texts = [
        tasks.DESCRIBE_PROMPT,
        tasks.HIGHLIGHT_PROMPT,
        tasks.TOPK_PROMPT,
        tasks.HIGHLIGHT_ANSWER_PREFIX,
        tasks.TOPK_ANSWER_PREFIX,
        tasks.BLANK_ANSWER,
        "nothing on a black background",
        "at the top left and a small blue square",
        _EXTRA_WORDS,
    ]
    texts.extend(concept for concepts in CATEGORIES.values() for concept in concepts)
    return texts


def toy_vocabulary() -> list[str]:
    """Word vocabulary: special tokens, newline, punctuation, then each world word in lower and Title case."""
    words: set[str] = set()
    for text in world_texts():
        words.update(re.findall(r"[A-Za-z]+", text))
    cased = {variant for word in words for variant in (word.lower(), word.capitalize())}
    return [*SPECIAL_TOKENS, NEWLINE, *PUNCTUATION, *sorted(cased)]


def build_tokenizer(extra_words: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Build the toy word-level tokenizer with Gemma 3's special tokens.

    `<bos>` is prepended by plain calls (like Gemma's tokenizer); chat prompts already start with it
    and the processor then skips adding another.

    Args:
        extra_words: More words to add to the vocabulary.

    Returns:
        A `PreTrainedTokenizerFast` with `boi_token`, `eoi_token` and `image_token` attributes set.
    """
    vocabulary = toy_vocabulary()
    vocabulary += [word for word in dict.fromkeys(extra_words) if word not in set(vocabulary)]
    vocab = {token: index for index, token in enumerate(vocabulary)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = _pre_tokenizer()
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens={
            "boi_token": BOI_TOKEN,
            "eoi_token": EOI_TOKEN,
            "image_token": IMAGE_TOKEN,
            "start_of_turn_token": START_OF_TURN,
            "end_of_turn_token": END_OF_TURN,
        },
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=True,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
    )


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """Ids for building a `Gemma3Config`: image/boi/eoi token ids and pad/bos/eos ids.

    Returns:
        {"image_token_id", "boi_token_id", "eoi_token_id", "pad_token_id", "bos_token_id",
        "eos_token_id", "unk_token_id", "start_of_turn_id", "end_of_turn_id", "newline_id", "vocab_size"}.
    """
    ids = {
        "image_token_id": IMAGE_TOKEN,
        "boi_token_id": BOI_TOKEN,
        "eoi_token_id": EOI_TOKEN,
        "pad_token_id": PAD_TOKEN,
        "bos_token_id": BOS_TOKEN,
        "eos_token_id": EOS_TOKEN,
        "unk_token_id": UNK_TOKEN,
        "start_of_turn_id": START_OF_TURN,
        "end_of_turn_id": END_OF_TURN,
        "newline_id": NEWLINE,
    }
    result = {name: tokenizer.convert_tokens_to_ids(token) for name, token in ids.items()}
    result["vocab_size"] = len(tokenizer)
    return result


def build_image_processor(image_size: int = IMAGE_SIZE) -> Gemma3ImageProcessor:
    """Gemma 3 image processor for square toy images: resize, rescale to [0, 1], normalise to [-1, 1]."""
    return Gemma3ImageProcessor(
        size={"height": image_size, "width": image_size},
        do_resize=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
        do_pan_and_scan=False,
    )


def build_processor(
    tokenizer: PreTrainedTokenizerFast | None = None,
    image_size: int = IMAGE_SIZE,
    mm_tokens_per_image: int = 16,
) -> Gemma3Processor:
    """Build a `Gemma3Processor` for the toy world.

    Args:
        tokenizer: Tokenizer from `build_tokenizer`; built if None.
        image_size: Side of the square input images in pixels.
        mm_tokens_per_image: Image soft tokens per image; must match the model config.

    Returns:
        A processor whose outputs hold `input_ids`, `attention_mask`, `token_type_ids` (1 on image soft
        tokens) and `pixel_values` [batch_images, 3, image_size, image_size].
    """
    if mm_tokens_per_image < 1:
        raise ValueError(f"mm_tokens_per_image must be positive, got {mm_tokens_per_image}.")
    tokenizer = tokenizer or build_tokenizer()
    missing = [
        t
        for t in (BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN)
        if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)
    ]
    if missing:
        raise ValueError(f"Tokenizer lacks the image tokens {missing}; build it with build_tokenizer().")
    return Gemma3Processor(
        image_processor=build_image_processor(image_size),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=mm_tokens_per_image,
    )
