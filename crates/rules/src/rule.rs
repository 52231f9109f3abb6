//! A checked, compiled rule: evaluation and explanation.

use std::fmt;
use std::sync::Arc;

use crate::ast::{Expr, Quantifier, Span};
use crate::compile::{Node, TextTest};
use crate::device::DeviceProperties;
use crate::explain::{Explanation, ExpressionDetails, PropertyToEvaluate, PropertyValue};
use crate::property::Property;

/// A valid rule, compiled once (regexes built, constants case-folded) and then evaluated as
/// often as needed. Cloning is cheap (one reference count); it is `Send + Sync`, so one
/// compiled rule serves any number of threads.
#[derive(Clone)]
pub struct CompiledRule {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    ast: Expr,
    root: Node,
    reads: u64,
}

impl fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledRule")
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl CompiledRule {
    pub(crate) fn new(source: &str, ast: Expr, root: Node, reads: u64) -> Self {
        CompiledRule {
            inner: Arc::new(Inner {
                source: source.to_owned(),
                ast,
                root,
                reads,
            }),
        }
    }

    /// Whether `device` satisfies the rule. Does not allocate.
    pub fn evaluate<D: DeviceProperties + ?Sized>(&self, device: &D) -> bool {
        eval(&self.inner.root, device, None)
    }

    /// The result for `device` with the result of every sub-expression, in the shape of
    /// Graph's `evaluateDynamicMembership`. Its result is always [`CompiledRule::evaluate`]'s.
    pub fn explain<D: DeviceProperties + ?Sized>(&self, device: &D) -> Explanation {
        let explainer = Explainer {
            source: &self.inner.source,
            device,
        };
        let details = explainer.node(&self.inner.root, None);
        Explanation {
            membership_rule_evaluation_result: details.expression_result,
            membership_rule_evaluation_details: details,
        }
    }

    /// Whether the rule reads `property` (does it depend on `enrollmentProfileName`, say).
    pub fn reads(&self, property: Property) -> bool {
        property
            .index()
            .is_some_and(|index| self.inner.reads & (1 << index) != 0)
    }

    /// Every property the rule reads, in [`Property::ALL`] order.
    pub fn read_properties(&self) -> impl Iterator<Item = Property> + '_ {
        Property::ALL
            .into_iter()
            .filter(|property| self.reads(*property))
    }

    /// The rule's text as given to [`check`](crate::check).
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The rule's syntax tree. Its `Display` is the rule's canonical form.
    pub fn ast(&self) -> &Expr {
        &self.inner.ast
    }
}

/// Evaluates `node`; `element` is the current element of the innermost quantifier.
fn eval<D: DeviceProperties + ?Sized>(node: &Node, device: &D, element: Option<&str>) -> bool {
    match node {
        Node::Or(operands, _) => operands
            .iter()
            .any(|operand| eval(operand, device, element)),
        Node::And(operands, _) => operands
            .iter()
            .all(|operand| eval(operand, device, element)),
        Node::Not(operand, _) => !eval(operand, device, element),
        Node::Text { property, test, .. } => test.test(device.string(*property)),
        Node::Boolean {
            property,
            expected,
            negated,
            ..
        } => (device.boolean(*property) == *expected) != *negated,
        Node::SomeElement { property, test, .. } => {
            some_element(test, device.collection(*property))
        }
        Node::Quantified {
            property,
            quantifier,
            predicate,
            ..
        } => {
            let mut elements = device.collection(*property).iter();
            // The usual predicate, `(_ -op "…")`: one test per element, without recursing.
            if let Node::Element { test, .. } = &**predicate {
                return match quantifier {
                    Quantifier::Any => elements.any(|e| test.test(Some(e))),
                    Quantifier::All => elements.all(|e| test.test(Some(e))),
                };
            }
            match quantifier {
                Quantifier::Any => elements.any(|e| eval(predicate, device, Some(e))),
                Quantifier::All => elements.all(|e| eval(predicate, device, Some(e))),
            }
        }
        Node::Element { test, .. } => test.test(element),
    }
}

/// A comparison straight on a collection: the positive test on some element, then negated.
fn some_element(test: &TextTest, elements: &[String]) -> bool {
    elements.iter().any(|element| test.matcher.matches(element)) != test.negated
}

struct Explainer<'a, D: ?Sized> {
    source: &'a str,
    device: &'a D,
}

impl<D: DeviceProperties + ?Sized> Explainer<'_, D> {
    fn text(&self, span: Span) -> String {
        self.source
            .get(span.start..span.end)
            .unwrap_or_default()
            .to_owned()
    }

    fn details(
        &self,
        span: Span,
        result: bool,
        property: Option<PropertyToEvaluate>,
        operands: Vec<ExpressionDetails>,
    ) -> ExpressionDetails {
        ExpressionDetails {
            expression: self.text(span),
            expression_result: result,
            property_to_evaluate: property,
            expression_evaluation_details: operands,
        }
    }

    /// Explains `node`; `element` is the current element and the collection it is from.
    fn node(&self, node: &Node, element: Option<(Property, &str)>) -> ExpressionDetails {
        let value = element.map(|(_, value)| value);
        match node {
            Node::Or(operands, span) | Node::And(operands, span) => {
                let operands: Vec<ExpressionDetails> = operands
                    .iter()
                    .map(|operand| self.node(operand, element))
                    .collect();
                let mut results = operands.iter().map(|operand| operand.expression_result);
                let result = if matches!(node, Node::Or(..)) {
                    results.any(|result| result)
                } else {
                    results.all(|result| result)
                };
                self.details(*span, result, None, operands)
            }
            Node::Not(operand, span) => {
                let operand = self.node(operand, element);
                self.details(*span, !operand.expression_result, None, vec![operand])
            }
            Node::Text {
                property,
                test,
                span,
            } => {
                let current = self.device.string(*property);
                let shown = scalar(current.map(str::to_owned));
                self.details(
                    *span,
                    test.test(current),
                    Some(property_value(*property, shown)),
                    Vec::new(),
                )
            }
            Node::Boolean {
                property,
                expected,
                negated,
                span,
            } => {
                let current = self.device.boolean(*property);
                let shown = scalar(current.map(|flag| flag.to_string()));
                self.details(
                    *span,
                    (current == *expected) != *negated,
                    Some(property_value(*property, shown)),
                    Vec::new(),
                )
            }
            Node::SomeElement {
                property,
                test,
                span,
            } => {
                let elements = self.device.collection(*property);
                self.details(
                    *span,
                    some_element(test, elements),
                    Some(property_value(
                        *property,
                        PropertyValue::List(elements.to_vec()),
                    )),
                    Vec::new(),
                )
            }
            Node::Quantified {
                property,
                quantifier,
                predicate,
                span,
            } => {
                let elements = self.device.collection(*property);
                let per_element: Vec<ExpressionDetails> = elements
                    .iter()
                    .map(|e| self.node(predicate, Some((*property, e))))
                    .collect();
                let mut results = per_element.iter().map(|details| details.expression_result);
                let result = match quantifier {
                    Quantifier::Any => results.any(|result| result),
                    Quantifier::All => results.all(|result| result),
                };
                self.details(
                    *span,
                    result,
                    Some(property_value(
                        *property,
                        PropertyValue::List(elements.to_vec()),
                    )),
                    per_element,
                )
            }
            Node::Element { test, span } => {
                let shown = scalar(value.map(str::to_owned));
                let property = element.map(|(collection, _)| property_value(collection, shown));
                self.details(*span, test.test(value), property, Vec::new())
            }
        }
    }
}

fn scalar(value: Option<String>) -> PropertyValue {
    value.map_or(PropertyValue::Null, PropertyValue::Text)
}

fn property_value(property: Property, value: PropertyValue) -> PropertyToEvaluate {
    PropertyToEvaluate {
        property_name: property.name().to_owned(),
        property_value: value,
    }
}
