"""How phonetic are semantic tokens? PNMI and purity against phone alignments, and cross-speaker agreement.

Definitions follow HuBERT (Hsu et al. 2021, section IV-D): with the joint distribution p(phone, id)
over frames,
    phone purity   = E_id [max_phone p(phone | id)]
    cluster purity = E_phone [max_id p(id | phone)]
    PNMI           = I(phone; id) / H(phone)   (fraction of phone uncertainty the ids remove; the
                     homogeneity of the ids with phones as classes: tests check it against torchmetrics)
Cross-speaker agreement: utterances with the same text and phone sequence spoken by different
speakers; for each phone, the most frequent id over its frames; the fraction of phones whose id
agrees, and the edit distance between the de-duplicated id sequences (normalised by length).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch

from audiolm_pl.semantic.corpus import Utterance


@dataclass
class TokenQuality:
    pnmi: float
    phone_purity: float
    cluster_purity: float
    frames: int  # labelled frames counted
    num_phones: int  # distinct phone labels seen
    used_ids: int  # distinct ids seen
    utterances: int
    speaker_pairs: int  # same-text pairs of different speakers compared
    cross_speaker_agreement: Optional[float]  # per-phone majority id agrees; None without pairs
    cross_speaker_unit_edit: Optional[float]  # normalised edit distance of deduplicated ids; None without pairs

    def lines(self) -> list[str]:
        rows = [
            f"PNMI {self.pnmi:.4f}   phone purity {self.phone_purity:.4f}   cluster purity {self.cluster_purity:.4f}",
            f"{self.frames} labelled frames, {self.utterances} utterances, {self.num_phones} phones, {self.used_ids} ids used",
        ]
        if self.speaker_pairs:
            rows.append(
                f"cross-speaker: {self.speaker_pairs} same-text pairs, per-phone id agreement "
                f"{self.cross_speaker_agreement:.4f}, unit edit distance {self.cross_speaker_unit_edit:.4f}"
            )
        else:
            rows.append("cross-speaker: no same-text utterances by different speakers")
        return rows


def frame_phone_labels(phones: list, num_frames: int, frame_rate: float) -> list[Optional[str]]:
    """The phone covering each frame centre, or None where no phone is aligned."""
    labels: list[Optional[str]] = [None] * num_frames
    for start, end, phone in phones:
        first = max(0, math.ceil(float(start) * frame_rate - 0.5))
        last = min(num_frames, math.ceil(float(end) * frame_rate - 0.5))
        for frame in range(first, last):
            labels[frame] = str(phone)
    return labels


def scores_from_counts(counts: torch.Tensor) -> tuple[float, float, float]:
    """counts (P, K) joint frame counts -> (PNMI, phone purity, cluster purity)."""
    joint = counts.double() / counts.sum()  # (P, K)
    p_phone, p_id = joint.sum(1), joint.sum(0)  # (P,), (K,)
    nonzero = joint > 0
    outer = p_phone[:, None] * p_id[None, :]  # (P, K)
    mutual = (joint[nonzero] * (joint[nonzero] / outer[nonzero]).log()).sum()
    entropy = -(p_phone[p_phone > 0] * p_phone[p_phone > 0].log()).sum()
    pnmi = float(mutual / entropy) if entropy > 0 else 0.0
    return pnmi, float(joint.max(0).values.sum()), float(joint.max(1).values.sum())


def edit_distance(a: list[int], b: list[int]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


@dataclass
class _Spoken:
    speaker: str
    phones: list[str]
    phone_ids: list[int]  # majority id per aligned phone
    units: list[int] = field(default_factory=list)  # ids with consecutive repeats removed


def _spoken(utterance: Utterance, ids: list[int], frame_rate: float) -> _Spoken:
    phones, phone_ids = [], []
    for start, end, phone in utterance.phones:
        first = max(0, math.ceil(float(start) * frame_rate - 0.5))
        span = ids[first : max(first + 1, math.ceil(float(end) * frame_rate - 0.5))]
        if span:
            phones.append(str(phone))
            phone_ids.append(max(set(span), key=span.count))
    units = [key for key, _ in itertools.groupby(ids)]
    return _Spoken(utterance.speaker, phones, phone_ids, units)


def cross_speaker(by_text: dict[str, list[_Spoken]]) -> tuple[int, Optional[float], Optional[float]]:
    agree = compared = pairs = 0
    edits = []
    for spoken in by_text.values():
        for a, b in itertools.combinations(spoken, 2):
            if a.speaker == b.speaker:
                continue
            pairs += 1
            edits.append(edit_distance(a.units, b.units) / max(len(a.units), len(b.units), 1))
            if a.phones == b.phones:
                agree += sum(x == y for x, y in zip(a.phone_ids, b.phone_ids))
                compared += len(a.phones)
    if not pairs:
        return 0, None, None
    return pairs, (agree / compared if compared else None), sum(edits) / len(edits)


@torch.no_grad()
def measure(tokenizer, utterances: Iterable[Utterance]) -> TokenQuality:
    """Encode each utterance (with phone alignments) and score the ids against its phones."""
    phone_index: dict[str, int] = {}
    pairs_phone, pairs_id = [], []
    by_text: dict[str, list[_Spoken]] = {}
    count = 0
    for utterance in utterances:
        if not utterance.phones:
            continue
        count += 1
        wav = torch.from_numpy(utterance.wav)[None]  # (1, T)
        ids = tokenizer.encode(wav)[0].cpu().tolist()  # (T_s,)
        for label, token in zip(frame_phone_labels(utterance.phones, len(ids), tokenizer.frame_rate), ids):
            if label is not None:
                pairs_phone.append(phone_index.setdefault(label, len(phone_index)))
                pairs_id.append(token)
        if utterance.text.strip():
            by_text.setdefault(utterance.text.strip().lower(), []).append(_spoken(utterance, ids, tokenizer.frame_rate))
    if not pairs_phone:
        raise ValueError("no utterance with phone alignments ('phones' in the shard json) to measure against")
    counts = torch.zeros(len(phone_index), tokenizer.vocab_size, dtype=torch.float64)
    counts.index_put_((torch.tensor(pairs_phone), torch.tensor(pairs_id)), torch.ones(len(pairs_id), dtype=torch.float64), accumulate=True)
    pnmi, phone_purity, cluster_purity = scores_from_counts(counts)
    pairs, agreement, unit_edit = cross_speaker(by_text)
    return TokenQuality(
        pnmi, phone_purity, cluster_purity, len(pairs_phone), len(phone_index), len(set(pairs_id)), count, pairs, agreement, unit_edit
    )
