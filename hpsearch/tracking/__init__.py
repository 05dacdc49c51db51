"""MLflow, written from the driver: which store (``uri``), opening it (``store``), the one writer
(``writer``), the parent and child runs (``tracker``) and the children's names (``names``),
reconciling after a resume (``reconcile``), the sweep's end (``close``), its tables and plots
(``analysis``), and MLflow's internals behind named functions (``compat``)."""
