"""Everything that talks to Ray: joining a cluster and checking it (``cluster``), the Tune run of a
sweep (``tuner``), its searchers and schedulers (``searchers``, ``schedulers``), the driver's
callbacks (``callbacks``), the sweep's stopper (``stopper``), checkpoints across its life
(``checkpoints``), and Ray's internals behind named functions with canary tests (``compat``).

Each module but ``compat`` imports Ray Tune when imported."""
