"""DynamicMoE in reinforcement learning (seed 000, Section 3.2): PPO with MoE-SimBa blocks.

Needs the optional extra `pip install -e ".[rl]"` (JAX, flax, optax, gymnax, craftax). Modules:
`envs` (two-stage MinAtar stream, Craftax with optimistic resets), `nets` (SimBa / MoE-SimBa actor-critic and
expert growth), `optim` (Adam with per-entry step counts), `ppo` (GAE, loss, one jitted iteration), `train`
(run directory, checkpoints, resume), `figures` (Fig. 3 curves, Fig. 4 router trace, comparison table).
"""
