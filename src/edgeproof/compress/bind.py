"""A graph with several inputs or outputs seen as the one-input logits model the audit sees.

Compression calibrates, measures and re-audits a graph by feeding the data to one input and
reading class scores from one output. For a third-party graph with more (an RNN taking its
state, a model taking its sample rate, a second output returning the new state) the same
:class:`~edgeproof.models.interface.ModelInterface` the audit uses says which input the data
feeds and which output holds the scores; :func:`bind_graph` writes that choice into the graph:

* every other input is computed inside the graph — its given value (``input_values``), the
  default of :data:`~edgeproof.models.interface.DEFAULTS` (``sr = 16000``), or zeros of its
  declared shape with each symbolic dimension equal to the data's batch size (exactly the values
  :class:`~edgeproof.models.interface.BoundSession` feeds an audited session);
* only the chosen output is returned; ``scores="probabilities"`` turns it into logits as
  :func:`~edgeproof.models.interface.scores_to_logits` does (log, and ``[log(1−p), log p]``
  for a single column).

The nodes it adds are named ``edgeproof.bind/…`` and touch no tensor of the source graph.
:meth:`BoundGraph.unbind` removes them from a quantized copy and restores the source's inputs
and outputs, so the model compress writes keeps the interface of the model the user gave
(audit it with the same ``--input/--output/--scores`` flags).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeproof.errors import SpecError, param
from edgeproof.models.interface import DEFAULTS, ModelInterface, choose_io

__all__ = ["PREFIX", "BoundGraph", "bind_graph", "graph_feeds"]

PREFIX = "edgeproof.bind/"
_EPS = 1e-12


def graph_feeds(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a caller feeds (initializers listed as inputs left out)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


@dataclass(frozen=True)
class BoundGraph:
    """The one-input, logits-output view of a graph, and how to undo it.

    Attributes:
        model: the bound graph (``model`` itself when nothing needed binding).
        source: the graph as given.
        data_input: the input the data feeds.
        described: what was bound, in words (recorded in compress.json and the report).
    """

    model: onnx.ModelProto
    source: onnx.ModelProto
    data_input: str
    described: str

    @property
    def is_bound(self) -> bool:
        return self.model is not self.source

    def unbind(self, quantized: onnx.ModelProto) -> onnx.ModelProto:
        """``quantized`` (a rewrite of :attr:`model`) with the binding nodes removed and the
        source graph's inputs and outputs restored."""
        if not self.is_bound:
            return quantized
        m = onnx.ModelProto()
        m.CopyFrom(quantized)
        g = m.graph
        kept = [n for n in g.node if not n.name.startswith(PREFIX)]
        del g.node[:]
        g.node.extend(kept)
        del g.input[:]
        g.input.extend(self.source.graph.input)
        del g.output[:]
        g.output.extend(self.source.graph.output)
        return m


def _dims(info: onnx.ValueInfoProto) -> list[int | None]:
    return [
        d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim
    ]


def _choose(model: onnx.ModelProto, interface: ModelInterface, name: str) -> tuple[str, int]:
    """The data input and the scores output, chosen as for an audited session."""
    feeds = [i.name for i in graph_feeds(model)]
    shown = [f"{o.name} {_dims(o)}" for o in model.graph.output]
    return choose_io(interface, feeds, shown, name)


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    """A Constant node producing tensor ``name`` (the node itself named under :data:`PREFIX`)."""
    node = name if name.startswith(PREFIX) else PREFIX + name
    return helper.make_node(
        "Constant", [], [name], name=node, value=numpy_helper.from_array(value, name)
    )


def _value_nodes(
    info: onnx.ValueInfoProto, data: str, interface: ModelInterface
) -> tuple[list[onnx.NodeProto], str]:
    """Nodes computing input ``info``'s value (named as the input), and that value in words."""
    dtype = helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
    dims = _dims(info)
    if info.name in interface.input_values:
        fill, said = float(interface.input_values[info.name]), "(given)"
    elif info.name in DEFAULTS and not dims:
        fill, said = float(DEFAULTS[info.name]), "(edgeproof's default)"
    else:
        symbolic = any(d is None for d in dims)
        fill, said = 0.0, "(zeros; symbolic dimensions = batch)" if symbolic else "(zeros)"
    text = f"{info.name} = {fill:g} {said}" if not dims else f"{info.name} = {fill:g} {dims} {said}"
    if all(d is not None for d in dims):
        full = np.full([int(d or 0) for d in dims], fill, dtype=dtype)
        return [_const(info.name, full)], text
    p = f"{PREFIX}{info.name}/"
    nodes = [
        helper.make_node("Shape", [data], [p + "data_shape"], name=p + "data_shape"),
        _const(p + "zero", np.array([0], np.int64)),
        helper.make_node(
            "Gather", [p + "data_shape", p + "zero"], [p + "batch"], name=p + "batch", axis=0
        ),
    ]
    pieces = []
    for j, d in enumerate(dims):
        if d is None:
            pieces.append(p + "batch")
        else:
            nodes.append(_const(f"{p}dim{j}", np.array([d], np.int64)))
            pieces.append(f"{p}dim{j}")
    nodes.append(helper.make_node("Concat", pieces, [p + "shape"], name=p + "shape", axis=0))
    nodes.append(
        helper.make_node(
            "ConstantOfShape",
            [p + "shape"],
            [info.name],
            name=p + "fill",
            value=numpy_helper.from_array(np.array([fill], dtype=dtype)),
        )
    )
    return nodes, text


def _logit_nodes(
    output: str, dims: list[int | None], scores: str | None
) -> tuple[list[onnx.NodeProto], str]:
    """Output ``output`` as ``(N, K)`` logits, as :func:`scores_to_logits` computes them: a
    1-D output as one column; probabilities clamped to ``[ε, 1]`` and logged, a single column
    of class 1's score as ``[log(1−p), log p]`` (probabilities) or ``[0, z]`` (logits)."""
    p = PREFIX + "logits/"
    nodes = [helper.make_node("Cast", [output], [p + "x"], name=p + "cast", to=TensorProto.FLOAT)]
    x = p + "x"
    if len(dims) == 1:
        nodes += [
            _const(p + "col", np.array([-1, 1], np.int64)),
            helper.make_node("Reshape", [x, p + "col"], [p + "x2"], name=p + "reshape"),
        ]
        x = p + "x2"
    single = len(dims) == 1 or (len(dims) == 2 and dims[-1] == 1)
    if scores != "probabilities":
        if not single:
            return nodes, x
        nodes += [
            helper.make_node("Sub", [x, x], [p + "zero"], name=p + "zeros"),
            helper.make_node("Concat", [p + "zero", x], [p + "out"], name=p + "out", axis=1),
        ]
        return nodes, p + "out"
    nodes += [
        _const(p + "eps", np.array(_EPS, np.float32)),
        _const(p + "one", np.array(1.0, np.float32)),
        helper.make_node("Clip", [x, p + "eps", p + "one"], [p + "pc"], name=p + "clip"),
        helper.make_node("Log", [p + "pc"], [p + "lp"], name=p + "logp"),
    ]
    if not single:
        return nodes, p + "lp"
    nodes += [
        helper.make_node("Sub", [p + "one", x], [p + "q"], name=p + "q"),
        helper.make_node("Clip", [p + "q", p + "eps", p + "one"], [p + "qc"], name=p + "qclip"),
        helper.make_node("Log", [p + "qc"], [p + "lq"], name=p + "logq"),
        helper.make_node("Concat", [p + "lq", p + "lp"], [p + "out"], name=p + "out", axis=1),
    ]
    return nodes, p + "out"


def bind_graph(model: onnx.ModelProto, interface: ModelInterface, name: str) -> BoundGraph:
    """The one-input logits view of ``model`` as ``interface`` says (see the module docstring).

    Raises:
        OptionError: ``interface`` names an input or output the graph does not have.
        SpecError: the graph has several outputs and ``interface.output`` chooses none.
    """
    feeds = graph_feeds(model)
    data, index = _choose(model, interface, name)
    out = model.graph.output[index]
    dims = _dims(out)
    single = len(dims) == 1 or (len(dims) == 2 and dims[-1] == 1)
    if single and interface.scores is None:
        raise SpecError(
            f"{name}: the model returns one score per sample; if it is a binary score of "
            f"class 1, say whether it is a logit or a probability with {param('scores')} "
            "logits or probabilities"
        )
    convert = single or interface.scores == "probabilities"
    if len(feeds) == 1 and len(model.graph.output) == 1 and not convert:
        return BoundGraph(model, model, data, f"the data feeds input {data!r}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    nodes: list[onnx.NodeProto] = []
    said = [f"the data feeds input {data!r}"]
    for info in feeds:
        if info.name != data:
            extra, text = _value_nodes(info, data, interface)
            nodes.extend(extra)
            said.append(text)
    output = onnx.ValueInfoProto()
    output.CopyFrom(out)
    tail: list[onnx.NodeProto] = []
    if convert:
        tail, result = _logit_nodes(out.name, dims, interface.scores)
        output = helper.make_tensor_value_info(result, TensorProto.FLOAT, None)
    said.append(f"output {index} {out.name!r} as {interface.scores or 'logits'}")
    body = nodes + list(g.node) + tail
    del g.node[:]
    g.node.extend(body)
    kept = [i for i in g.input if i.name == data or i.name in {t.name for t in g.initializer}]
    del g.input[:]
    g.input.extend(kept)
    del g.output[:]
    g.output.append(output)
    return BoundGraph(m, model, data, "; ".join(said))
