"""Recovery strategies, one small object per family, and the default map that orders them per failure type."""

from recovery.strategies.adjust import FirstAdjuster, ParameterAdjustment
from recovery.strategies.base import Strategy
from recovery.strategies.defaults import DEFAULT_STRATEGY_MAP, StrategyMap, build_strategies, validate_strategy_map
from recovery.strategies.degrade import GracefulDegradation
from recovery.strategies.fallback import IntelligentFallback
from recovery.strategies.intervene import UserIntervention
from recovery.strategies.optimise import ResourceOptimization
from recovery.strategies.repair import AutomaticRepair
from recovery.strategies.retry import DEFAULT_BUDGETS, ImmediateRetry, RetryBudget

__all__ = [
    "AutomaticRepair",
    "DEFAULT_BUDGETS",
    "DEFAULT_STRATEGY_MAP",
    "FirstAdjuster",
    "GracefulDegradation",
    "ImmediateRetry",
    "IntelligentFallback",
    "ParameterAdjustment",
    "ResourceOptimization",
    "RetryBudget",
    "Strategy",
    "StrategyMap",
    "UserIntervention",
    "build_strategies",
    "validate_strategy_map",
]
