"""Each compute job as one Argo Workflow, built with Hera, and the two engines that run it.

- ``workflows.spec``: :class:`~workflows.spec.JobSpec`, what a job needs, independent of any engine.
- ``workflows.builder``: :func:`~workflows.builder.build_workflow` turns it into a Hera ``Workflow`` from the step
  templates of a ``StepRegistry`` (``workflows.registry``; ``default_registry`` in ``workflows.templates`` holds
  the built-in steps) and the job's ``BuildOptions``.
- ``workflows.status_map``: step phases -> Ocean status, for both engines.
- The engines run that object: ``workflows.local`` (bubblewrap sandboxes on this machine) and ``workflows.argo``
  (a real Argo; a watcher mirrors status into Postgres). Only the entry points (``node``) pick one.
- ``workflows.exceptions``: ``WorkflowError``, the root of this package's errors.

This file imports nothing: the warm step runner imports ``workflows.local`` modules inside its sandbox, with
the standard library, ``steps`` and ``c2d`` only (no site-packages, so no Hera).
"""
