"""Storage and the shared study: storage URLs, the retrying RDB storage, the study lock, creating and resuming
studies, the samplers and pruners a study may name, the budget, the claim path (claim, heartbeat, requeue, reap)
and ASHA's promotion rules. Torch-free: every worker, and the read side, stands on this layer."""

from bonas.study.samplers import PRUNERS, SAMPLERS
from bonas.study.storage import BonasStorage, open_storage
from bonas.study.studies import Opened, create_or_resume, find_config, open_existing

__all__ = ["PRUNERS", "SAMPLERS", "BonasStorage", "Opened", "create_or_resume", "find_config", "open_existing", "open_storage"]
