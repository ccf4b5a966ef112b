"""MCTN: the Multimodal Cyclic Translation Network (Pham, Liang, Manzini, Morency and Póczos, AAAI 2019, "Found in
Translation: Learning Robust Joint Representations by Cyclic Translations Between Modalities").

The joint representation is learned by *translating* a source modality S (text) into target modalities, so that at
inference the prediction needs the source alone: audio and vision are translation targets during training and are
never read by :meth:`MCTN.forward` (a corrupted or missing audio / vision stream cannot change a prediction).

Architecture (hierarchical MCTN, S = text, T1 = vision and T2 = audio by default, ``first_target`` swaps them):

* stage 1, S -> T1: an encoder reads the text, E_{S->T1} = f_e1(X^S), a sequence of states over the text positions
  (``stage1_states``, the joint representation of S and T1) and a summary s_1; a decoder translates it,
  X_hat^T1 = f_d1(E_{S->T1}), a sequence of T1's own length;
* cycle, T1 -> S: the translation is encoded and decoded back, X_hat^S = f_d1'(f_e1'(X_hat^T1)) (back-translation);
* stage 2, (S <-> T1) -> T2: a second encoder reads the stage-1 states, E_{(S<->T1)->T2} = f_e2(E_{S->T1})
  (``stage2_states``, the final joint representation, summary s_2), and a decoder translates it into the second
  target, X_hat^T2 = f_d2(E_{(S<->T1)->T2});
* inference network: y_hat = g(E_{(S<->T1)->T2}): an LSTM over the stage-2 states, attention pooling
  alpha_i = softmax_i(tanh(w . a_i + b)) over the real text positions, p = sum_i alpha_i a_i, and a linear layer
  (the authors' regression network).

Encoders are (bi)LSTMs over the packed true lengths (:class:`~robustmsa.models.base.SequenceEncoder`; with
``bidirectional`` both directions are concatenated, ``hidden / 2`` wide each); the summary is the last hidden states.
A decoder (:class:`TranslationDecoder`) starts from h_0 = tanh(W s) of its encoder's summary, runs an LSTM over the
target steps and attends to its encoder's states: at step t with LSTM state h_t, c_t = sum_i softmax_i(q(h_t) . e_i
/ sqrt(d)) e_i over the real source positions, and x_hat_t = W_o [h_t; c_t] + b_o.

Objective: the paper's coupled translation-prediction objective, a weighted sum of the translation losses, the cycle
loss and the prediction loss (the authors' configs: 0.1 for each translation and for the cycle, 1 for the prediction;
MMSA the same). The prediction loss is the training method's task loss (L1 for regression, as the authors' MAE and
MMSA's trainer, or cross-entropy); :meth:`MCTN.auxiliary_losses` returns, in training mode only (in eval mode
nothing), each other term already weighted, with the translations of :meth:`MCTN.translate`:

* ``mctn_translate_<T1>``: ``translation_weight`` (lambda_t) times the mean squared error between X_hat^T1 and X^T1;
* ``mctn_cycle_text``: ``cycle_weight`` (lambda_c) times the mean squared error between X_hat^S and X^S;
* ``mctn_translate_<T2>``: ``second_translation_weight`` times the mean squared error between X_hat^T2 and X^T2.

Each MSE is :func:`~robustmsa.models.base.masked_mse`: over the real steps and features of the batch (padding never
enters; without padding it equals MMSA's ``nn.MSELoss``); a batch without any real step of a target gives 0.

Sequences of different lengths (unaligned inputs). A translation is needed only in training, when the target is
known, so the decoder runs for exactly the target's true length n_T (teacher forcing over the target's real steps):
with ``teacher_forcing`` its input at step t is the true previous target frame x_{t-1} (a zero frame at t = 0), as
MMSA's decoder; without it, the relative position t / (n_T - 1) only, so the translation is generated from the source
alone (as the authors' decoder, which reads nothing but its attention context). The decoder LSTM is causal and runs
over the packed true lengths, its attention masks the source padding, and the outputs at padded steps are 0, so a
sample's translation depends neither on padding nor on the other samples. An empty target sequence (n_T = 0) has
nothing to translate and adds nothing to its loss; the cycle of such a sample has no translation to read back, so
its text steps are left out of the cycle loss as well.

Outputs: ``Output.fused`` = p, the pooled vector the prediction reads; ``Output.modality``: ``text`` -> s_1 (the text
encoder's summary) and ``joint`` -> s_2 (the summary of the final joint representation); ``Output.extras``:
``stage1_states`` (B, Lt, hidden), ``stage2_states`` (B, Lt, second_hidden) (zero at padded steps) and
``pooling_attention`` (B, Lt) (sums to 1 over the real text steps). The forward pass builds no translation (it
reads no target); :meth:`MCTN.translate` returns them, with the decoders' attention weights.

Deviations from the paper and from MMSA's implementation (``MMSA/models/singleTask/MCTN.py``), each on purpose:

* Text: precomputed token features (BERT / GloVe / MiniLM) as the source, not a fine-tuned BERT (MMSA's BERT encoder
  is commented out as well); the cycle reconstructs these features.
* Back-translation: the authors' code and MMSA run X_hat^T1 back through the *same* encoder and decoder, which needs
  every modality zero-padded to one feature width (the authors' data loader pads to the widest, MMSA pads vision and
  audio to 768). Here the cycle has its own encoder f_e1' and decoder f_d1': text is 384 / 768 wide and vision 10 /
  20 / 35, so a shared encoder would read vision through a few of its input columns and a shared decoder would
  spend most of its outputs on zeros. The cycle loss still trains the joint encoder, since its gradient reaches
  f_e1 and f_d1 through X_hat^T1.
* Unaligned inputs: the authors (and MMSA's experiments) use word-aligned sequences padded to one length; here every
  decoder produces the target on the target's own time axis (see above) and every encoder stops at the true length
  (MMSA's encoders and decoders run over the padding, and its MSE counts it).
* Decoder: attention is computed from the LSTM state after the step (Luong-style, a scaled dot product with a learned
  query map, so that a translation is one packed ``nn.LSTM`` call) instead of before it (the authors' cell scores
  each encoder state with its previous cell state and feeds only the attention context to its LSTM; MMSA's Bahdanau
  attention scores them with the previous decoder state, the encoder summary at the first step, and its
  bidirectional decoder LSTM restarts from a zero state at every step). Teacher forcing is always on in MMSA (both
  branches of its teacher-forcing draw use the true frame) and absent in the authors' code; here it is the
  ``teacher_forcing`` switch (default on). MMSA never predicts the first target step (it stays 0 inside its MSE);
  here every real step is predicted. No tanh on the decoder output (the authors' cell has one, for features scaled
  to [-1, 1]).
* Bidirectional encoders concatenate the two directions (hidden / 2 each) instead of summing them (hidden each), to
  reuse :class:`~robustmsa.models.base.SequenceEncoder`.
* Inference network: attention weights over the real text steps only; dropout (``dropout``) on the stage-1 and
  stage-2 states and on p; the authors' L2 penalty (0.01) on the output layer is left to the optimiser's weight decay.
* Not implemented: the bimodal MCTN and the paired (non-hierarchical) trimodal variant (``first_target`` only chooses
  which target comes first), and multi-layer encoders / decoders (depth 1, the references' setting).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.dataset import TaskSpec
from robustmsa.errors import ConfigError
from robustmsa.models.attention import key_padding_mask
from robustmsa.models.base import Backbone, Output, SequenceEncoder, masked_mse, run_packed
from robustmsa.registry import BACKBONES

TARGETS = ("vision", "audio")


class TranslationDecoder(nn.Module):
    """A seq2seq decoder: an LSTM over the target's true length from h_0 = tanh(W s), attention over the encoder states.

    With ``teacher_forcing`` the LSTM reads the true previous target frame (a zero frame at the first step),
    otherwise the relative position t / (n - 1) of the step (0 at the first step, 1 at the last)."""

    def __init__(self, source_dim: int, target_dim: int, hidden: int, teacher_forcing: bool = True) -> None:
        super().__init__()
        self.teacher_forcing = teacher_forcing
        self.init = nn.Linear(source_dim, hidden)
        self.rnn = nn.LSTM(target_dim if teacher_forcing else 1, hidden, batch_first=True)
        self.query = nn.Linear(hidden, source_dim, bias=False)
        self.out = nn.Linear(hidden + source_dim, target_dim)

    def forward(self, states: Tensor, source_mask: Tensor, summary: Tensor, target: Tensor, target_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder ``states`` (B, Ls, E) with their (B, Ls) bool mask and ``summary`` (B, E); the (B, Lt, D) target
        (read only with teacher forcing) and its (B, Lt) mask (real steps first) -> the translation (B, Lt, D), 0 at
        padded steps, and the attention weights (B, Lt, Ls), 0 at padded target steps and source positions."""
        size, steps = target_mask.shape
        if steps == 0:
            return target.new_zeros(size, 0, self.out.out_features), states.new_zeros(size, 0, states.shape[1])
        lengths = target_mask.sum(dim=1)
        if self.teacher_forcing:
            frames = target.masked_fill(~target_mask.unsqueeze(-1), 0.0)  # padding never reaches the decoder
            inputs = torch.cat([frames.new_zeros(size, 1, frames.shape[-1]), frames[:, :-1]], dim=1)  # x_{t-1}, x_{-1} = 0
        else:
            t = torch.arange(steps, device=states.device, dtype=states.dtype).unsqueeze(0)
            inputs = (t / (lengths.to(states.dtype) - 1).clamp_min(1.0).unsqueeze(1)).unsqueeze(-1)
        h0 = torch.tanh(self.init(summary)).unsqueeze(0)
        hidden, _ = run_packed(self.rnn, inputs, target_mask, (h0, torch.zeros_like(h0)))
        scores = self.query(hidden) @ states.transpose(1, 2) / math.sqrt(states.shape[-1])  # (B, Lt, Ls)
        scores = scores.masked_fill(key_padding_mask(source_mask).unsqueeze(1), float("-inf"))
        keep = target_mask.unsqueeze(-1)
        weights = torch.softmax(scores, dim=-1).masked_fill(~keep, 0.0)
        translation = self.out(torch.cat([hidden, weights @ states], dim=-1)).masked_fill(~keep, 0.0)
        return translation, weights


@BACKBONES.register("mctn")
class MCTN(Backbone):
    def __init__(
        self,
        dims: dict[str, int],
        task: TaskSpec,
        hidden: int = 32,
        second_hidden: int = 32,
        predictor_hidden: int = 32,
        bidirectional: bool = True,
        teacher_forcing: bool = True,
        first_target: str = "vision",
        dropout: float = 0.1,
        translation_weight: float = 0.1,
        cycle_weight: float = 0.1,
        second_translation_weight: float = 0.1,
    ) -> None:
        super().__init__(dims, task)
        for name, value in (("hidden", hidden), ("second_hidden", second_hidden), ("predictor_hidden", predictor_hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"mctn {name} must be a positive integer, got {value!r}")
            if bidirectional and name != "predictor_hidden" and value % 2:
                raise ConfigError(f"mctn {name} must be even with bidirectional encoders (hidden / 2 per direction), got {value}")
        for name, value in (("bidirectional", bidirectional), ("teacher_forcing", teacher_forcing)):
            if not isinstance(value, bool):
                raise ConfigError(f"mctn {name} must be true or false, got {value!r}")
        if first_target not in TARGETS:
            raise ConfigError(f"mctn first_target must be one of {list(TARGETS)} (the modality the text is translated into first), got {first_target!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"mctn dropout must be a number in [0, 1), got {dropout!r}")
        weights = {"translation_weight": translation_weight, "cycle_weight": cycle_weight, "second_translation_weight": second_translation_weight}
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"mctn {name} must be a finite number >= 0, got {value!r}")
        self.first, self.second = first_target, next(m for m in TARGETS if m != first_target)
        self.encoder1 = SequenceEncoder(dims["text"], hidden, kind="lstm", bidirectional=bidirectional)  # f_e1
        self.decoder1 = TranslationDecoder(hidden, dims[self.first], hidden, teacher_forcing)  # f_d1
        self.back_encoder = SequenceEncoder(dims[self.first], hidden, kind="lstm", bidirectional=bidirectional)  # f_e1'
        self.back_decoder = TranslationDecoder(hidden, dims["text"], hidden, teacher_forcing)  # f_d1'
        self.encoder2 = SequenceEncoder(hidden, second_hidden, kind="lstm", bidirectional=bidirectional)  # f_e2
        self.decoder2 = TranslationDecoder(second_hidden, dims[self.second], second_hidden, teacher_forcing)  # f_d2
        self.predictor = SequenceEncoder(second_hidden, predictor_hidden, kind="lstm")  # g: LSTM, attention pooling, linear
        self.score = nn.Linear(predictor_hidden, 1)
        self.head = nn.Linear(predictor_hidden, self.out_dim)
        self.dropout = nn.Dropout(dropout)
        self.translation_weight = float(translation_weight)
        self.cycle_weight = float(cycle_weight)
        self.second_translation_weight = float(second_translation_weight)

    def forward(self, batch: Batch) -> Output:
        """Reads ``batch.text`` and its mask only."""
        mask = batch.mask("text")
        states1, summary1 = self.encoder1.states(batch.text, mask)
        states1 = self.dropout(states1)
        states2, summary2 = self.encoder2.states(states1, mask)
        states2 = self.dropout(states2)
        activations, _ = self.predictor.states(states2, mask)
        scores = torch.tanh(self.score(activations)).squeeze(-1).masked_fill(key_padding_mask(mask), float("-inf"))
        attention = torch.softmax(scores, dim=-1)
        pooled = self.dropout((attention.unsqueeze(-1) * activations).sum(dim=1))
        extras = {"stage1_states": states1, "stage2_states": states2, "pooling_attention": attention}
        return Output(logits=self.head(pooled), fused=pooled, modality={"text": summary1, "joint": summary2}, extras=extras)

    def translate(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        """The translations of a forward ``output`` into the batch's targets (teacher-forced over their true lengths):
        ``<T1>`` = X_hat^T1, ``cycle_text`` = X_hat^S (from X_hat^T1), ``<T2>`` = X_hat^T2, each (B, L_m, D_m) and 0 at
        padded steps, and each decoder's attention weights ``attention_<key>`` (B, L_m, L_source)."""
        e, text_mask = output.extras, batch.mask("text")
        first, first_mask = getattr(batch, self.first), batch.mask(self.first)
        out: dict[str, Tensor] = {}
        out[self.first], out[f"attention_{self.first}"] = self.decoder1(e["stage1_states"], text_mask, output.modality["text"], first, first_mask)
        back_states, back_summary = self.back_encoder.states(out[self.first], first_mask)
        out["cycle_text"], out["attention_cycle_text"] = self.back_decoder(back_states, first_mask, back_summary, batch.text, text_mask)
        second, second_mask = getattr(batch, self.second), batch.mask(self.second)
        out[self.second], out[f"attention_{self.second}"] = self.decoder2(e["stage2_states"], text_mask, output.modality["joint"], second, second_mask)
        return out

    def auxiliary_losses(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if not self.training:
            return {}
        t = self.translate(batch, output)
        text_mask = batch.mask("text")
        cycle_mask = text_mask & (batch.lengths(self.first) > 0).to(text_mask.device).unsqueeze(1)  # no translation, no cycle
        return {
            f"mctn_translate_{self.first}": self.translation_weight * masked_mse(t[self.first], getattr(batch, self.first), batch.mask(self.first)),
            "mctn_cycle_text": self.cycle_weight * masked_mse(t["cycle_text"], batch.text, cycle_mask),
            f"mctn_translate_{self.second}": self.second_translation_weight * masked_mse(t[self.second], getattr(batch, self.second), batch.mask(self.second)),
        }
