"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): the teacher is the exponential moving average of the
student's weights (the same EMA model the loop evaluates), and the student is asked to predict what the teacher
predicts for another augmentation of the same image.

For a labeled batch x of size B and an unlabeled batch u of size μB, each image of u weakly augmented twice
(weak₁ for the student f_θ, weak₂ for the teacher f_θ'), C classes:

    ℓ_s = CE(labels, f_θ(x))
    ℓ_u = 1/(C·μB) · Σ ‖softmax(f_θ(weak₁(u))) − softmax(f_θ'(weak₂(u)))‖²     no gradient into the teacher
    ℓ   = ℓ_s + λ(t) ℓ_u,   λ(t) = λ · min(1, t / (w·K))
    θ'  ← α θ' + (1 − α) θ  after each step (the loop's EMA, α = ema_decay)

The teacher runs in training mode (batch-norm on the batch's statistics), as the paper's code does. The paper
ramps λ(t) along exp(−5(1 − t/T)²); the linear ramp over w = 40 % of the K iterations and λ = 50 are TorchSSL's
defaults.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from implementations.interface import TrainConfig
from implementations.own.pimodel import squared_difference_of_predictions
from implementations.own.step_loss import (
    StepInputs,
    StepLoss,
    labeled_loss_words,
    ramp_words,
    unlabeled_batch_words,
)

VIEWS = ("weak", "weak")  # the student's and the teacher's, two independent draws

# How Mean Teacher differs from the other methods (the report's "How the methods differ" table).
TRAITS = {
    "target for an unlabeled image": "the teacher's (EMA weights) prediction on another weak view (soft)",
    "views of an unlabeled image": "two independent weak views (student, teacher)",
    "which targets count": "all",
    "unlabeled loss": "mean squared difference of the softmax outputs",
    "mixing": "none",
    "weight of the unlabeled loss": "λ, ramped up linearly",
    "state beyond the weights": "the teacher: the EMA of the weights (checkpointed with the run)",
}


# Where this method's defaults (TorchSSL's, used by own and TorchSSL alike) differ from its paper's recipe.
DEFAULTS_DIFFER_FROM_PAPER = (
    ("Tarvainen & Valpola ramp λ up along the Gaussian exp(−5(1 − t/T)²); TorchSSL's default (used here) ramps it "
     'linearly over the first 40 % of the iterations.'),
)

DIFFERENCES_FROM_TORCHSSL = (
    ("Batch norm: own forwards the student over [x; weak₁(u)] in one pass, so batch norm normalises and updates "
     "its running statistics over both together; TorchSSL forwards x, then weak₁(u) with the running statistics "
     "frozen (normalised by its own batch statistics, the running statistics from x alone). The teacher is in "
     "training mode in both, on its view's batch statistics."),
)


def describe_loss(config: TrainConfig) -> str:
    return (f"ℓ = ℓ_s + λ(t)·ℓ_u, {ramp_words(config)}; {labeled_loss_words(config)}; ℓ_u = 1/(C·μB)·Σ ‖softmax "
            f"f_θ(weak₁(u)) − softmax f_θ'(weak₂(u))‖² over {unlabeled_batch_words(config)}; the teacher θ' is the "
            f"EMA of the weights (decay {config.ema_decay:g}), in training mode, without gradient")


def mean_teacher_loss(labeled_logits: torch.Tensor, labels: torch.Tensor, student_logits: torch.Tensor,
                      teacher_logits: torch.Tensor, unsupervised_weight: float) -> StepLoss:
    supervised = F.cross_entropy(labeled_logits.float(), labels)
    unsupervised = squared_difference_of_predictions(student_logits, teacher_logits.detach())
    return StepLoss(supervised + unsupervised_weight * unsupervised, supervised, unsupervised, None, None)


def mean_teacher_step(student: nn.Module, teacher: nn.Module, labeled_images: torch.Tensor, labels: torch.Tensor,
                      student_view: torch.Tensor, teacher_view: torch.Tensor, unsupervised_weight: float) -> StepLoss:
    logits = student(torch.cat([labeled_images, student_view]))
    labeled_logits, student_logits = logits.split([len(labeled_images), len(student_view)])
    was_training = teacher.training
    teacher.train()
    with torch.no_grad():
        teacher_logits = teacher(teacher_view)
    teacher.train(was_training)
    loss = mean_teacher_loss(labeled_logits, labels, student_logits, teacher_logits, unsupervised_weight)
    loss.logits = logits
    return loss


def step(inputs: StepInputs) -> StepLoss:
    student_view, teacher_view = inputs.unlabeled_views
    return mean_teacher_step(inputs.model, inputs.teacher, inputs.labeled_images, inputs.labels, student_view,
                             teacher_view, inputs.ramped_weight)
