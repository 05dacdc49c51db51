"""The trial side: what runs in a trial's Ray actor and in each of its DDP workers. The user's API
(``session``: report, load_checkpoint; ``ddp``), the data (``data``), the reference trainable
(``train``), what a trial knows of its sweep (``spec``), the actor's entry point and replays
(``entry``) and multi-worker groups (``workers``). Never imports the driver side."""
