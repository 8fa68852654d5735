"""The deployment manager: scenario catalog → dependency DAG and sizing → tier fitness and swaps →
versioned deployment profile → secrets plan → `bundle.json` manifest (→ packaging on the fleet, phase 2).

It sits on top of the other apps (`deployments` → bundles, workflows, builds) and nothing imports it:
see docs/deployments.md for why it is its own app rather than part of `bundles`.
"""
