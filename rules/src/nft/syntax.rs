//! nft's text syntax for the IR's pieces, shared by the command emitter and the listing.
//!
//! Every writer takes the table's [`Family`], which decides `ip` versus `ip6` payload
//! expressions, address types and `dnat` forms.

use std::fmt::{self, Write};

use super::ir::{
    BaseChain, ChainType, DataType, Element, ElementValue, Expr, Family, Hook, Rule, SetData, SetDecl,
    SetKey, Statement, Value, Verdict,
};

/// nft refuses comments longer than this many bytes.
pub const MAX_COMMENT_BYTES: usize = 128;

/// Writes `text` as a quoted nft comment: quotes, backslashes and control characters become
/// `_` so that no object name can break the script, and the text is cut to nft's limit.
pub fn write_comment(f: &mut impl Write, text: &str) -> fmt::Result {
    f.write_str("comment \"")?;
    let mut used = 0;
    for c in text.chars() {
        let c = if c == '"' || c == '\\' || c.is_control() { '_' } else { c };
        used += c.len_utf8();
        if used > MAX_COMMENT_BYTES {
            break;
        }
        f.write_char(c)?;
    }
    f.write_char('"')
}

/// Writes a concatenation of expressions, `a . b . c`.
pub fn write_exprs(f: &mut impl Write, family: Family, exprs: &[Expr]) -> fmt::Result {
    for (i, expr) in exprs.iter().enumerate() {
        if i > 0 {
            f.write_str(" . ")?;
        }
        write_expr(f, family, *expr)?;
    }
    Ok(())
}

fn write_expr(f: &mut impl Write, family: Family, expr: Expr) -> fmt::Result {
    let ip = family.as_str();
    match expr {
        Expr::Saddr => write!(f, "{ip} saddr"),
        Expr::Daddr => write!(f, "{ip} daddr"),
        Expr::L4proto => f.write_str("meta l4proto"),
        Expr::ThDport => f.write_str("th dport"),
        Expr::Dport(protocol) => write!(f, "{protocol} dport"),
        Expr::NumgenRandom { modulus } => write!(f, "numgen random mod {modulus}"),
        Expr::NumgenInc { modulus } => write!(f, "numgen inc mod {modulus}"),
        Expr::SaddrHash { modulus, seed } => write!(f, "jhash {ip} saddr mod {modulus} seed {seed:#x}"),
    }
}

/// Writes a verdict.
pub fn write_verdict(f: &mut impl Write, verdict: &Verdict) -> fmt::Result {
    match verdict {
        Verdict::Accept => f.write_str("accept"),
        Verdict::Drop => f.write_str("drop"),
        Verdict::Return => f.write_str("return"),
        Verdict::Jump(chain) => write!(f, "jump {chain}"),
        Verdict::Goto(chain) => write!(f, "goto {chain}"),
    }
}

/// Writes a rule's statements and comment, as they follow `add rule <table> <chain>`.
pub fn write_rule(f: &mut impl Write, family: Family, rule: &Rule) -> fmt::Result {
    for (i, statement) in rule.statements.iter().enumerate() {
        if i > 0 {
            f.write_char(' ')?;
        }
        write_statement(f, family, statement)?;
    }
    if let Some(comment) = &rule.comment {
        f.write_char(' ')?;
        write_comment(f, comment)?;
    }
    Ok(())
}

fn write_statement(f: &mut impl Write, family: Family, statement: &Statement) -> fmt::Result {
    match statement {
        Statement::CtStateNew => f.write_str("ct state new"),
        Statement::CtStatusDnat => f.write_str("ct status dnat"),
        Statement::L4proto(protocol) => write!(f, "meta l4proto {protocol}"),
        Statement::InSet { key, set } => {
            write_exprs(f, family, key)?;
            write!(f, " @{set}")
        }
        Statement::VerdictMap { key, map } => {
            write_exprs(f, family, key)?;
            write!(f, " vmap @{map}")
        }
        Statement::DnatMap { key, map } => {
            write!(f, "dnat {} to ", family.as_str())?;
            write_exprs(f, family, key)?;
            write!(f, " map @{map}")
        }
        Statement::Masquerade => f.write_str("masquerade fully-random"),
        Statement::SaddrInPrefixes { prefixes, negate } => {
            write!(f, "{} saddr {}{{ ", family.as_str(), if *negate { "!= " } else { "" })?;
            for (i, prefix) in prefixes.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}", prefix.trunc())?;
            }
            f.write_str(" }")
        }
        Statement::FibSaddrLocal => f.write_str("fib saddr type local"),
        Statement::MarkSet(bits) => write!(f, "meta mark set meta mark or {bits:#x}"),
        Statement::MarkClear(bits) => write!(f, "meta mark & {bits:#x} == 0"),
        Statement::MarkToggle(bits) => write!(f, "meta mark set meta mark xor {bits:#x}"),
        Statement::NumgenVmap { chains } => {
            write!(f, "numgen random mod {} vmap {{ ", chains.len())?;
            for (i, chain) in chains.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{i} : goto {chain}")?;
            }
            f.write_str(" }")
        }
        Statement::DnatTo { address: std::net::IpAddr::V4(a), port } => write!(f, "dnat ip to {a}:{port}"),
        Statement::DnatTo { address: std::net::IpAddr::V6(a), port } => write!(f, "dnat ip6 to [{a}]:{port}"),
        Statement::UpdateSet { key, set } => {
            write!(f, "update @{set} {{ ")?;
            write_exprs(f, family, key)?;
            f.write_str(" }")
        }
        Statement::Reject => f.write_str("reject"),
        Statement::RejectTcpReset => f.write_str("reject with tcp reset"),
        Statement::Verdict(verdict) => write_verdict(f, verdict),
    }
}

/// Writes a base chain's `type … hook … priority …; policy accept;` clause.
pub fn write_base_chain(f: &mut impl Write, base: &BaseChain) -> fmt::Result {
    let chain_type = match base.chain_type {
        ChainType::Filter => "filter",
        ChainType::Nat => "nat",
    };
    let hook = match base.hook {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    };
    write!(f, "type {chain_type} hook {hook} priority {}; policy accept;", base.priority)
}

/// Writes a set's `type …;` or `typeof …;` clause and, for a map, its data type; then flags
/// and comment. This is the body of `add set` / `add map` between the braces.
pub fn write_set_decl_body(f: &mut impl Write, family: Family, decl: &SetDecl) -> fmt::Result {
    match &decl.key {
        SetKey::Types(types) => {
            f.write_str("type ")?;
            for (i, data_type) in types.iter().enumerate() {
                if i > 0 {
                    f.write_str(" . ")?;
                }
                f.write_str(match (data_type, family) {
                    (DataType::Addr, Family::Ip) => "ipv4_addr",
                    (DataType::Addr, Family::Ip6) => "ipv6_addr",
                    (DataType::InetProto, _) => "inet_proto",
                    (DataType::InetService, _) => "inet_service",
                })?;
            }
        }
        SetKey::Typeof(exprs) => {
            f.write_str("typeof ")?;
            write_exprs(f, family, exprs)?;
        }
    }
    match &decl.data {
        None => {}
        Some(SetData::Verdict) => f.write_str(" : verdict")?,
        Some(SetData::Typeof(exprs)) => {
            // `typeof` is stated once for the whole declaration; the data side repeats only
            // the expressions.
            f.write_str(" : ")?;
            write_exprs(f, family, exprs)?;
        }
    }
    f.write_str(";")?;
    if let Some(timeout) = decl.timeout {
        write!(f, " flags dynamic,timeout; timeout {timeout}s;")?;
    }
    if let Some(comment) = &decl.comment {
        f.write_char(' ')?;
        write_comment(f, comment)?;
        f.write_char(';')?;
    }
    Ok(())
}

/// Writes one element: key, comment and, in a map, `: value`.
pub fn write_element(f: &mut impl Write, key: &[Value], element: &Element) -> fmt::Result {
    write_values(f, key)?;
    if let Some(comment) = &element.comment {
        f.write_char(' ')?;
        write_comment(f, comment)?;
    }
    match &element.value {
        None => Ok(()),
        Some(ElementValue::Verdict(verdict)) => {
            f.write_str(" : ")?;
            write_verdict(f, verdict)
        }
        Some(ElementValue::Data(values)) => {
            f.write_str(" : ")?;
            write_values(f, values)
        }
    }
}

/// Writes a concatenation of values, `a . b . c`.
pub fn write_values(f: &mut impl Write, values: &[Value]) -> fmt::Result {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(" . ")?;
        }
        match value {
            Value::Addr(address) => write!(f, "{address}")?,
            Value::Proto(protocol) => write!(f, "{protocol}")?,
            Value::Port(port) => write!(f, "{port}")?,
            Value::Int(n) => write!(f, "{n}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_should_neutralise_quotes_and_stay_within_nfts_limit() {
        let mut out = String::new();
        write_comment(&mut out, &format!("a\"b\\c\n{}", "é".repeat(100))).unwrap();
        assert!(out.starts_with("comment \"a_b_c_é"));
        let inner = &out["comment \"".len()..out.len() - 1];
        assert!(inner.len() <= MAX_COMMENT_BYTES, "{} bytes", inner.len());
    }
}
