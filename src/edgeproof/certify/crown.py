"""CROWN (see :mod:`~edgeproof.certify.bounds`): the backward pass
(:mod:`~edgeproof.certify.backward`, its steps :mod:`~edgeproof.certify.steps`) and the intermediate
bounds computed with it (:mod:`~edgeproof.certify.intermediate`); this module is their public
home."""

from __future__ import annotations

from edgeproof.certify.backward import (
    _dense as _dense,
)
from edgeproof.certify.backward import (
    _input_lower as _input_lower,
)
from edgeproof.certify.backward import (
    backward as backward,
)
from edgeproof.certify.intermediate import (
    RowPlan as RowPlan,
)
from edgeproof.certify.intermediate import (
    _crown_grouped as _crown_grouped,
)
from edgeproof.certify.intermediate import (
    _crown_node as _crown_node,
)
from edgeproof.certify.intermediate import (
    _groups as _groups,
)
from edgeproof.certify.intermediate import (
    _joint_intermediate as _joint_intermediate,
)
from edgeproof.certify.intermediate import (
    _patch_start as _patch_start,
)
from edgeproof.certify.intermediate import (
    _sparse_safe as _sparse_safe,
)
from edgeproof.certify.intermediate import (
    _tighten as _tighten,
)
from edgeproof.certify.intermediate import (
    crown_nodes as crown_nodes,
)
from edgeproof.certify.intermediate import (
    intermediate_bounds as intermediate_bounds,
)
from edgeproof.certify.intermediate import (
    row_plan as row_plan,
)
from edgeproof.certify.steps import (
    Coef as Coef,
)
