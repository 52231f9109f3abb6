//! The explanation of a rule's result, in the shape of Microsoft Graph's
//! `evaluateDynamicMembership` response.

use serde::Serialize;

/// Why a rule is true or false for a device:
/// `{"membershipRuleEvaluationResult": bool, "membershipRuleEvaluationDetails": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The rule's result; always what [`CompiledRule::evaluate`](crate::CompiledRule::evaluate)
    /// returns.
    pub membership_rule_evaluation_result: bool,
    /// The whole rule's details.
    pub membership_rule_evaluation_details: ExpressionDetails,
}

/// One expression of the rule and its result.
///
/// - `-and`/`-or` (a chain of them is one node) and `-not`: `propertyToEvaluate` is null, and
///   the details list the operands.
/// - A comparison: `propertyToEvaluate` names the property and gives its value, no details.
/// - `-any`/`-all`: `propertyToEvaluate` gives the collection; the details hold the predicate
///   evaluated for each element, in order, each of whose comparisons gives the element as the
///   collection property's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpressionDetails {
    /// The expression's text as written in the rule, without enclosing parentheses.
    pub expression: String,
    /// Its result.
    pub expression_result: bool,
    /// The property it reads, for comparisons and quantifiers.
    pub property_to_evaluate: Option<PropertyToEvaluate>,
    /// The details of its operands.
    pub expression_evaluation_details: Vec<ExpressionDetails>,
}

/// A property and the value it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyToEvaluate {
    /// The canonical property name (`deviceModel`).
    pub property_name: String,
    /// Its value.
    pub property_value: PropertyValue,
}

/// A property's value. As in Graph, scalars are strings (`accountEnabled` gives `"true"` or
/// `"false"`); an absent value is `null`; a collection is an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PropertyValue {
    /// Absent.
    Null,
    /// A string, or a boolean as `"true"`/`"false"`.
    Text(String),
    /// A collection.
    List(Vec<String>),
}
