"""Layer 2: what a few-shot algorithm is, and code shared by families of algorithms.

``base`` holds the contract (:class:`~metastudio.algorithms.base.Algorithm`, which meta-trains
and adapts, and :class:`~metastudio.algorithms.base.Learner`, the adapted classifier),
``hyperparameters`` the declared hyperparameters and their roles, ``backbone`` the backbone
contract. Shared by families: ``gradient`` (MAML, Reptile, the LSTM meta-learner),
``taskbatch`` (running many tasks' fast weights in one batch), ``feature_transform`` (CL2N),
``augment`` (training distortions) and ``openset`` (the rule that marks a query unsure).
It may import ``metastudio.data`` and ``metastudio.errors``, nothing above.
"""
