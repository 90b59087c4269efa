"""What the adapter needs to know of each TorchSSL algorithm at the pinned commit, in one table.

Every TorchSSL algorithm is a copy of the same program: a script `<script>.py` whose argparse defaults and
`config/<script>/<script>_cifar10_<N>_0.yaml` give its arguments and whose `main_worker` builds the class
`models/<script>/<script>.py:<class>`, with `train`, `evaluate` and `save_model`, and whose training loop calls
`self.ema.update()` once at the end of every iteration. What differs is in this table:

- the script, and its class;
- `arguments`: our TrainConfig fields under its argument names (only the fields the method reads,
  interface.ALGORITHMS; the fields every method shares are in adapter.py);
- `signals`: how its loop's variables at `self.ema.update()` map to our training signals: every loop has
  `sup_loss` and `total_loss`, the semi-supervised ones `unsup_loss`; the threshold methods also name the
  per-image mask, the pseudo-labels and the unlabeled indices, under the names this table reads;
- `resume_gap`: what its `save_model` leaves out, so that a resumed run does not continue the same
  training (None: only the data order and the random state differ, as for every TorchSSL run);
- `given_labeled_split_only`: TorchSSL's fullysupervised trains on all the training labels (its README's
  95.38 % is that top line); as our supervised baseline it is handed the labeled split as its training set;
- `needs_process_group`: FreeMatch's and SoftMatch's scripts call `torch.distributed.barrier()` even when
  not distributed; the child gives them a process group of one (gloo), and nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

if TYPE_CHECKING:  # torch only where a loop's signals are read (the child), not where the table is
    import torch

# TrainConfig field -> TorchSSL argument, where most scripts agree; `arguments` of an entry names the exceptions.
USUAL_ARGUMENTS = {
    "unlabeled_ratio": "uratio",
    "threshold": "p_cutoff",
    "unsupervised_weight": "ulb_loss_ratio",
    "unsupervised_warmup": "unsup_warmup_pos",
    "sharpen_temperature": "T",
    "mixup_alpha": "alpha",
    "threshold_warmup": "thresh_warmup",
}


@dataclass
class IterationSignals:
    """One iteration of a TorchSSL loop under our meanings (tensors as the loop left them)."""

    supervised_loss: torch.Tensor
    unsupervised_loss: torch.Tensor  # before its weight; zero for the supervised baseline
    total_loss: torch.Tensor
    kept: torch.Tensor | None = None  # per unlabeled image: 1 where its pseudo-label counts (SoftMatch: its weight)
    pseudo_labels: torch.Tensor | None = None
    unlabeled_indices: torch.Tensor | None = None  # into the training set, for pseudo-label accuracy
    class_thresholds: torch.Tensor | None = None  # the confidence a pseudo-label of each class needs


@dataclass(frozen=True)
class TorchSSLAlgorithm:
    script: str
    class_name: str
    signals: Callable[[Mapping[str, object], object], IterationSignals]  # (loop variables, its args)
    arguments: Mapping[str, str] = field(default_factory=dict)  # exceptions to USUAL_ARGUMENTS
    resume_gap: str | None = None
    # Its main_worker calls torch.distributed.barrier() even in a single process: it needs a process group (of one).
    needs_process_group: bool = False
    # It trains on every training label it is given (fullysupervised, TorchSSL's top line): it is given our labeled
    # split only, so that it is the supervised baseline of the same N labels.
    given_labeled_split_only: bool = False
    # How the method differs from the others, for the methods own does not have (own's are in its method files).
    traits: Mapping[str, str] | None = None

    @property
    def module(self) -> str:
        return f"models.{self.script}.{self.script}"

    def argument_name(self, our_field: str) -> str:
        return self.arguments.get(our_field, USUAL_ARGUMENTS[our_field])


def _losses(loop: Mapping[str, object]) -> dict[str, torch.Tensor]:
    import torch

    supervised = loop["sup_loss"]
    unsupervised = loop.get("unsup_loss")
    return {"supervised_loss": supervised, "total_loss": loop["total_loss"],
            "unsupervised_loss": torch.zeros_like(supervised) if unsupervised is None else unsupervised}


def consistency_signals(loop: Mapping[str, object], args) -> IterationSignals:
    """Methods without pseudo-labels (and the supervised baseline): the losses only."""
    return IterationSignals(**_losses(loop))


def fixed_threshold_signals(loop: Mapping[str, object], args) -> IterationSignals:
    import torch

    """FixMatch, UDA, Pseudo-Label: `select` is the mask (max probability ≥ p_cutoff), `pseudo_lb` its argmax."""
    kept = loop["select"]
    return IterationSignals(**_losses(loop), kept=kept, pseudo_labels=loop["pseudo_lb"],
                            unlabeled_indices=loop["x_ulb_idx"],
                            class_thresholds=torch.full((args.num_classes,), float(args.p_cutoff), device=kept.device))


def flexmatch_signals(loop: Mapping[str, object], args) -> IterationSignals:
    import torch

    """FlexMatch returns only the mean of its mask (`mask`); `select` is the fixed threshold it counts σ with.
    The per-image mask is its convex mapping of the learning effects `classwise_acc` of this iteration,
    τ·β/(2−β), applied to the weak view's confidence; the child checks that its mean is TorchSSL's `mask`."""
    learning_effect = loop["classwise_acc"]
    thresholds = loop["p_cutoff"] * (learning_effect / (2.0 - learning_effect))  # TorchSSL's order of operations
    confidence, pseudo_labels = torch.softmax(loop["logits_x_ulb_w"].detach(), dim=-1).max(dim=-1)
    kept = confidence.ge(thresholds[pseudo_labels]).float()
    if not torch.equal(kept.mean(), loop["mask"].detach()):
        raise RuntimeError("the adapter's reading of FlexMatch's per-image mask disagrees with TorchSSL's mask rate")
    return IterationSignals(**_losses(loop), kept=kept, pseudo_labels=pseudo_labels,
                            unlabeled_indices=loop["x_ulb_idx"], class_thresholds=thresholds)


def freematch_signals(loop: Mapping[str, object], args) -> IterationSignals:
    """FreeMatch: `mask` per image; the threshold of class c is τ_t·p̃_t(c)/max p̃_t (`time_p`, `p_model`)."""
    p_model = loop["p_model"]
    pseudo_labels = loop["logits_x_ulb_w"].detach().argmax(dim=-1)
    return IterationSignals(**_losses(loop), kept=loop["mask"].float(), pseudo_labels=pseudo_labels,
                            unlabeled_indices=loop["x_ulb_idx"],
                            class_thresholds=loop["time_p"] * p_model / p_model.max())


def softmatch_signals(loop: Mapping[str, object], args) -> IterationSignals:
    """SoftMatch weighs every pseudo-label by a Gaussian of its confidence (`mask`): its mask rate is the mean
    weight, its pseudo-label accuracy the weighted one; it has no threshold."""
    pseudo_labels = loop["logits_x_ulb_w"].detach().argmax(dim=-1)
    return IterationSignals(**_losses(loop), kept=loop["mask"].float(), pseudo_labels=pseudo_labels,
                            unlabeled_indices=loop["x_ulb_idx"])


_NOT_SAVED = "its save_model does not save {what}, so a resumed run starts {how}"
# Seven of TorchSSL's algorithms return from save_model without saving while `self.it < 1000000`.
NO_CHECKPOINT_BEFORE = 1_000_000
_NO_CHECKPOINT = (f"its save_model writes nothing before iteration {NO_CHECKPOINT_BEFORE:,}, so a run stopped "
                  "before then starts again from iteration 0")

REMIXMATCH_TRAITS = {
    "target for an unlabeled image": "the prediction on its weak view, aligned to the labeled class distribution "
                                     "and sharpened (T)",
    "views of an unlabeled image": "one weak, two strong, and a rotated strong one (rotation loss)",
    "which targets count": "all",
    "unlabeled loss": "cross-entropy on the mixed batch, plus on one strong view before mixing, plus rotation",
    "mixing": "MixUp (α) of labeled and unlabeled images",
    "weight of the unlabeled loss": "w_match = 1.5 and w_kl = 0.5, ramped up over 1/64 of training; w_rot = 0.5",
    "state beyond the weights": "the running class distribution of its predictions (distribution alignment)",
}
VAT_TRAITS = {
    "target for an unlabeled image": "the prediction on its weak view (soft)",
    "views of an unlabeled image": "one weak view and its adversarial perturbation (ε = 6)",
    "which targets count": "all",
    "unlabeled loss": "KL divergence of the prediction under the perturbation, plus entropy minimisation (0.06)",
    "mixing": "none",
    "weight of the unlabeled loss": "λ, ramped up linearly",
    "state beyond the weights": "none",
}
FREEMATCH_TRAITS = {
    "target for an unlabeled image": "the argmax of the prediction on its weak view (a hard pseudo-label)",
    "views of an unlabeled image": "weak (target) and strong (trained)",
    "which targets count": "those with confidence ≥ a self-adaptive per-class threshold τ_t·p̃_t(c)/max p̃_t",
    "unlabeled loss": "cross-entropy",
    "mixing": "none",
    "weight of the unlabeled loss": "λ, constant (freematch.py has no fairness term)",
    "state beyond the weights": "moving averages of the confidence and of the class distribution",
}
SOFTMATCH_TRAITS = {
    "target for an unlabeled image": "the argmax of the prediction on its weak view after distribution alignment",
    "views of an unlabeled image": "weak (target) and strong (trained)",
    "which targets count": "all, weighted by a truncated Gaussian of the confidence",
    "unlabeled loss": "weighted cross-entropy",
    "mixing": "none",
    "weight of the unlabeled loss": "λ, constant",
    "state beyond the weights": "moving averages of the confidence's mean and variance and of the class distributions",
}

TORCHSSL_ALGORITHMS: dict[str, TorchSSLAlgorithm] = {
    "fixmatch": TorchSSLAlgorithm("fixmatch", "FixMatch", fixed_threshold_signals),
    "supervised": TorchSSLAlgorithm("fullysupervised", "FullySupervised", consistency_signals,
                                    resume_gap=_NO_CHECKPOINT, given_labeled_split_only=True),
    "pseudolabel": TorchSSLAlgorithm("pseudolabel", "PseudoLabel", fixed_threshold_signals, resume_gap=_NO_CHECKPOINT),
    "pimodel": TorchSSLAlgorithm("pimodel", "PiModel", consistency_signals, resume_gap=_NO_CHECKPOINT),
    "meanteacher": TorchSSLAlgorithm("meanteacher", "MeanTeacher", consistency_signals,
                                     {"unsupervised_warmup": "unsup_warm_up"}, _NO_CHECKPOINT),
    "mixmatch": TorchSSLAlgorithm("mixmatch", "MixMatch", consistency_signals, {"unsupervised_warmup": "ramp_up"},
                                  _NO_CHECKPOINT),
    "uda": TorchSSLAlgorithm("uda", "Uda", fixed_threshold_signals, resume_gap=_NO_CHECKPOINT),
    "flexmatch": TorchSSLAlgorithm(
        "flexmatch", "FlexMatch", flexmatch_signals,
        resume_gap=_NOT_SAVED.format(what="the latest pseudo-label of each unlabeled image (selected_label)",
                                     how="its per-class thresholds from scratch, in the warm-up")),
    "remixmatch": TorchSSLAlgorithm(
        "remixmatch", "ReMixMatch", consistency_signals,
        resume_gap=_NO_CHECKPOINT + "; nor would it save its distribution alignment's running class distribution",
        traits=REMIXMATCH_TRAITS),
    "vat": TorchSSLAlgorithm("vat", "Vat", consistency_signals, {"unsupervised_weight": "vat_weight"},
                             traits=VAT_TRAITS),
    "freematch": TorchSSLAlgorithm(
        "freematch", "FreeMatch", freematch_signals,
        resume_gap=_NOT_SAVED.format(what="its self-adaptive threshold and class distribution (time_p, p_model, "
                                          "label_hist), and saves an iteration count one behind",
                                     how="its thresholds afresh and trains one iteration twice"),
        needs_process_group=True, traits=FREEMATCH_TRAITS),
    "softmatch": TorchSSLAlgorithm(
        "softmatch", "SoftMatch", softmatch_signals,
        resume_gap=_NOT_SAVED.format(what="the running confidence mean and variance and class distributions of its "
                                          "weighting (prob_max_mu_t, prob_max_var_t, lb/ulb_prob_t), and saves an "
                                          "iteration count one behind",
                                     how="its weighting afresh and trains one iteration twice"),
        needs_process_group=True, traits=SOFTMATCH_TRAITS),
}
