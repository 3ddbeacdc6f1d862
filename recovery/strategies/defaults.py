"""The default strategy map (ordered per failure type), its validation, and the factory wiring ports in."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence

from recovery.ports import Degrader, ModelStorePort, Notifier, ParameterAdjuster, ResourceFreer
from recovery.strategies.adjust import ParameterAdjustment
from recovery.strategies.base import Strategy
from recovery.strategies.degrade import GracefulDegradation
from recovery.strategies.fallback import IntelligentFallback
from recovery.strategies.intervene import UserIntervention
from recovery.strategies.optimise import ResourceOptimization
from recovery.strategies.repair import AutomaticRepair
from recovery.strategies.retry import DEFAULT_BUDGETS, ImmediateRetry, RetryBudget
from recovery.taxonomy import EnhancedFailureType, RecoveryStrategy

__all__ = ["DEFAULT_STRATEGY_MAP", "StrategyMap", "validate_strategy_map", "build_strategies"]

F = EnhancedFailureType
R = RecoveryStrategy
StrategyMap = Mapping[EnhancedFailureType, Sequence[RecoveryStrategy]]

DEFAULT_STRATEGY_MAP: dict[EnhancedFailureType, tuple[RecoveryStrategy, ...]] = {
    F.MODEL_DOWNLOAD_FAILURE: (R.IMMEDIATE_RETRY, R.AUTOMATIC_REPAIR, R.INTELLIGENT_FALLBACK, R.USER_INTERVENTION),
    F.MODEL_CORRUPTION_DETECTED: (R.AUTOMATIC_REPAIR, R.INTELLIGENT_FALLBACK, R.USER_INTERVENTION),
    F.MODEL_VERSION_MISMATCH: (R.AUTOMATIC_REPAIR, R.INTELLIGENT_FALLBACK, R.USER_INTERVENTION),
    F.MODEL_LOADING_TIMEOUT: (R.RESOURCE_OPTIMIZATION, R.IMMEDIATE_RETRY, R.INTELLIGENT_FALLBACK, R.USER_INTERVENTION),
    F.MODEL_INTEGRITY_FAILURE: (R.AUTOMATIC_REPAIR, R.INTELLIGENT_FALLBACK, R.USER_INTERVENTION),
    F.MODEL_COMPATIBILITY_ERROR: (R.INTELLIGENT_FALLBACK, R.USER_INTERVENTION),
    F.VRAM_EXHAUSTION: (R.PARAMETER_ADJUSTMENT, R.RESOURCE_OPTIMIZATION, R.GRACEFUL_DEGRADATION, R.USER_INTERVENTION),
    F.STORAGE_SPACE_INSUFFICIENT: (R.INTELLIGENT_FALLBACK, R.USER_INTERVENTION),
    F.NETWORK_CONNECTIVITY_LOSS: (
        R.IMMEDIATE_RETRY,
        R.INTELLIGENT_FALLBACK,
        R.GRACEFUL_DEGRADATION,
        R.USER_INTERVENTION,
    ),
    F.BANDWIDTH_LIMITATION: (R.IMMEDIATE_RETRY, R.AUTOMATIC_REPAIR, R.INTELLIGENT_FALLBACK, R.USER_INTERVENTION),
    F.HARDWARE_OPTIMIZATION_FAILURE: (R.PARAMETER_ADJUSTMENT, R.GRACEFUL_DEGRADATION, R.USER_INTERVENTION),
    F.GENERATION_PIPELINE_ERROR: (
        R.IMMEDIATE_RETRY,
        R.PARAMETER_ADJUSTMENT,
        R.GRACEFUL_DEGRADATION,
        R.USER_INTERVENTION,
    ),
    F.SYSTEM_RESOURCE_ERROR: (R.RESOURCE_OPTIMIZATION, R.IMMEDIATE_RETRY, R.PARAMETER_ADJUSTMENT, R.USER_INTERVENTION),
    F.DEPENDENCY_MISSING: (R.GRACEFUL_DEGRADATION, R.USER_INTERVENTION),
    F.INVALID_PARAMETERS: (R.PARAMETER_ADJUSTMENT, R.USER_INTERVENTION),
    F.UNSUPPORTED_OPERATION: (R.PARAMETER_ADJUSTMENT, R.GRACEFUL_DEGRADATION, R.USER_INTERVENTION),
    F.PERMISSION_DENIED: (R.INTELLIGENT_FALLBACK, R.USER_INTERVENTION),
}


def validate_strategy_map(custom: StrategyMap | None = None) -> dict[EnhancedFailureType, tuple[RecoveryStrategy, ...]]:
    """The default map overridden by ``custom``, checked: known types, non-empty, no repeats, and
    ``user_intervention`` (where listed) last. Raises ``ValueError`` naming the bad entry."""
    merged = {**DEFAULT_STRATEGY_MAP, **(custom or {})}
    checked: dict[EnhancedFailureType, tuple[RecoveryStrategy, ...]] = {}
    for failure_type, order in merged.items():
        if not isinstance(failure_type, EnhancedFailureType):
            raise ValueError(f"strategy map key must be an EnhancedFailureType (got {failure_type!r})")
        order = tuple(order)
        if not order or not all(isinstance(item, RecoveryStrategy) for item in order):
            raise ValueError(f"`{failure_type.value}` needs a non-empty list of RecoveryStrategy (got {order!r})")
        if len(set(order)) != len(order):
            raise ValueError(f"`{failure_type.value}` lists a strategy twice (got {[s.value for s in order]})")
        if R.USER_INTERVENTION in order[:-1]:
            raise ValueError(f"`{failure_type.value}`: user_intervention must come last")
        checked[failure_type] = order
    return checked


def build_strategies(
    *,
    store: ModelStorePort | None = None,
    adjuster: ParameterAdjuster | None = None,
    freer: ResourceFreer | None = None,
    degrader: Degrader | None = None,
    notifier: Notifier | None = None,
    retry_budgets: Mapping[EnhancedFailureType, RetryBudget] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> dict[RecoveryStrategy, Strategy]:
    """One strategy object per kind, with the given ports (absent ports make a strategy not applicable)."""
    return {
        R.IMMEDIATE_RETRY: ImmediateRetry(
            budgets={**DEFAULT_BUDGETS, **(retry_budgets or {})}, sleep=sleep, rng=rng or random.Random()
        ),
        R.INTELLIGENT_FALLBACK: IntelligentFallback(store),
        R.AUTOMATIC_REPAIR: AutomaticRepair(store=store),
        R.PARAMETER_ADJUSTMENT: ParameterAdjustment(adjuster),
        R.RESOURCE_OPTIMIZATION: ResourceOptimization(freer=freer),
        R.GRACEFUL_DEGRADATION: GracefulDegradation(degrader=degrader),
        R.USER_INTERVENTION: UserIntervention(notifier),
    }
