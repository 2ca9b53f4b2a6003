//! Scheduling strategies from the Python frontend: `ray.util.scheduling_strategies`
//! objects arrive encoded as tuples (`("spread",)`, `("node", id, soft)`,
//! `("label", hard, soft)` with `(key, op, values)` conditions) and become the
//! core worker's [`Strategy`].

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use ray_core_worker::submitter::{LabelExpr, LabelOp, Strategy};

fn exprs(list: Vec<(String, String, Vec<String>)>) -> PyResult<Vec<LabelExpr>> {
    list.into_iter()
        .map(|(key, op, values)| {
            let op = LabelOp::parse(&op)
                .ok_or_else(|| PyValueError::new_err(format!("unknown label operator {op:?}: expected In, NotIn, Exists or DoesNotExist")))?;
            Ok(LabelExpr { key, op, values })
        })
        .collect()
}

/// The strategy a tuple names (`None`: the default).
pub fn parse(value: Option<&Bound<'_, PyAny>>) -> PyResult<Strategy> {
    let Some(v) = value else { return Ok(Strategy::Default) };
    if v.is_none() {
        return Ok(Strategy::Default);
    }
    let kind: String = v.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "default" => Strategy::Default,
        "spread" => Strategy::Spread,
        "node" => Strategy::NodeAffinity { node_id: v.get_item(1)?.extract()?, soft: v.get_item(2)?.extract()? },
        "label" => Strategy::NodeLabel { hard: exprs(v.get_item(1)?.extract()?)?, soft: exprs(v.get_item(2)?.extract()?)? },
        other => return Err(PyValueError::new_err(format!("unknown scheduling strategy {other:?}"))),
    })
}
