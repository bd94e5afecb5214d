"""The search: the define-by-run space, zero-cost proxies and screening, one trial (the objective), the artifacts a
trial keeps, one worker's loop, and the check of every name a config chooses from a registry."""

from bonas.nas.choices import check_choices
from bonas.nas.proxies import PROXIES
from bonas.nas.space import AUGMENT_POLICIES, specs_from_params, suggest_arch, suggest_training

__all__ = ["AUGMENT_POLICIES", "PROXIES", "check_choices", "specs_from_params", "suggest_arch", "suggest_training"]
