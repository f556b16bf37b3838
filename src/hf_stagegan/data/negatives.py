"""
Mismatched captions: a true caption with one colour word replaced by another colour ("... a red crown ..." ->
"... a blue crown ..."). They are the hard negatives of part-level text-image matching.

In-batch negatives rarely differ from the true caption in one part only, so a matcher trained on them alone learns the
dominant colour and little else (measured on SynthBirds: the true caption beats 5 crown-colour swaps only 18% of the
time, chance 17%). A caption that differs in exactly one part's colour is what teaches a matcher (CLIP_FT) and a
matching-aware discriminator to look at that part.

The replacement colours are the colour words that occur in the dataset's own captions, so a negative never contains a
word the text encoder has not seen in training.

>>> import numpy as np
>>> swap = ColorSwap.from_captions(["a red bird with blue wings", "a green bird"])
>>> swap.vocabulary
('blue', 'green', 'red')
>>> swap("a red bird with blue wings", 2, np.random.default_rng(0))
['a red bird with red wings', 'a green bird with blue wings']
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

# Colour words of CUB-200's captions (and every SynthBirds colour). Only those that occur in a dataset's captions are
# used for that dataset (`ColorSwap.from_captions`).
COLOR_WORDS = (
    "black", "blue", "brown", "buff", "chestnut", "cream", "crimson", "gold", "golden", "gray", "green", "grey",
    "maroon", "olive", "orange", "pink", "purple", "red", "rufous", "rust", "scarlet", "tan", "teal", "turquoise",
    "violet", "white", "yellow",
)  # fmt: skip
_SYNONYMS = {"gray": "grey", "gold": "golden"}  # never swap a colour for its own synonym


class ColorSwap:
    """
    Makes mismatched captions by replacing one colour word of a caption with a different colour of `vocabulary`.

    Args:
        vocabulary: the colour words that may be used and replaced (lower case).
    """

    def __init__(self, vocabulary: Iterable[str]):
        self.vocabulary = tuple(sorted(set(vocabulary)))
        if len(self.vocabulary) < 2:
            raise ValueError(
                f"`vocabulary` needs at least 2 colour words to swap one for another, got {list(self.vocabulary)}."
            )
        self._pattern = re.compile(r"\b(" + "|".join(self.vocabulary) + r")\b", re.IGNORECASE)
        # what a colour may become: one spelling per colour ("gray" and "grey" are one colour)
        self._replacements = tuple({_canonical(color): color for color in reversed(self.vocabulary)}.values())

    @classmethod
    def from_captions(cls, captions: Iterable[str], colors: Iterable[str] = COLOR_WORDS) -> ColorSwap:
        """The colour words of `colors` that occur in `captions`."""
        colors = set(colors)
        found = set()
        for caption in captions:
            found.update(word for word in re.findall(r"[a-z]+", caption.lower()) if word in colors)
            if found == colors:
                break
        return cls(found)

    def __call__(self, caption: str, num_negatives: int, rng: np.random.Generator) -> list[str]:
        """
        Up to `num_negatives` distinct mismatched versions of `caption`, each with one colour word replaced; fewer
        (possibly none) when the caption has too few colour words to make that many. Random choices come from `rng`.
        """
        matches = list(self._pattern.finditer(caption))
        negatives: list[str] = []
        if not matches:
            return negatives
        # every (occurrence, replacement) pair, in a random order: the first `num_negatives` distinct captions win
        options = [
            (match, color)
            for match in matches
            for color in self._replacements
            if _canonical(color) != _canonical(match.group(0).lower())
        ]
        for choice in rng.permutation(len(options)):
            match, color = options[choice]
            negative = caption[: match.start()] + color + caption[match.end() :]
            if negative not in negatives:
                negatives.append(negative)
            if len(negatives) == num_negatives:
                break
        return negatives


def _canonical(color: str) -> str:
    return _SYNONYMS.get(color, color)


__all__ = ["COLOR_WORDS", "ColorSwap"]
