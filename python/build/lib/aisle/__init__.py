"""aisle: the client and PyTorch datasets for an aisle cluster.

Find the cluster the way the aws CLI does (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) or pass them to :class:`Client`. torch is
optional: without it the datasets work as plain Python sequences and iterables; with it they
are ``torch.utils.data.Dataset`` / ``IterableDataset`` subclasses.
"""

from .client import AisleError, Client, Job
from .dataset import ObjectDataset, ShardMemberDataset, ShardSampleDataset, Split

__all__ = ["AisleError", "Client", "Job", "ObjectDataset", "ShardMemberDataset",
           "ShardSampleDataset", "Split"]
