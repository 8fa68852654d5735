"""Admin of the workflows app, one module per seam; importing this package registers every page.

* `display`    — cells and buttons the registry pages share.
* `registry`   — workflows (create, change, activate, roll back, spawn) and their versions; a tenant's
                 workflows on its page (the tenant admin itself is tenancy.admin's).
* `executions` — executions (timeline, output, cancel) and the spawn action the workflows list offers.
* `secrets`    — tenant secrets with a write-only value.
"""
from workflows.admin import executions, registry, secrets  # noqa: F401  (each registers its pages)
