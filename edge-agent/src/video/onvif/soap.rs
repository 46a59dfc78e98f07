//! SOAP 1.2 envelopes with a WS-Security UsernameToken (PasswordDigest) and WS-Addressing
//! headers, SOAP faults, and the XML helpers every answer's parser shares. Pure: no I/O and no
//! clock (the caller passes the nonce and the creation time).
//!
//! Elements are matched by local name only: cameras choose their own prefixes, and some put
//! elements in the wrong namespace.

use std::{borrow::Cow, fmt, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use jiff::Timestamp;
use roxmltree::{Document, Node};
use sha1::{Digest as _, Sha1};

pub const SOAP_ENVELOPE_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const WSSE_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
pub const WSU_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
pub const PASSWORD_DIGEST_TYPE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
pub const NONCE_ENCODING_TYPE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";
pub const WSA_NS: &str = "http://www.w3.org/2005/08/addressing";

/// What was wrong with an answer, without saying which call or device (the client adds both).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    #[error("a document that is not XML: {0}")]
    NotXml(String),
    #[error("XML that is not a SOAP envelope (no Envelope/Body)")]
    NotSoap,
    #[error("a SOAP fault {0}")]
    Fault(SoapFault),
    #[error("no {element} element")]
    Missing { element: &'static str },
    #[error("{element} = {value:?}, which is not {expected}")]
    Invalid {
        element: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// A SOAP fault: `Code/Value`, every nested `Subcode/Value`, and the first `Reason/Text`.
/// SOAP 1.1's `faultcode`/`faultstring`, which some cameras still send, fill the same fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapFault {
    /// `s:Sender` or `s:Receiver`, as the camera wrote it.
    pub code: String,
    /// Outermost first, e.g. `["ter:NotAuthorized"]` or `["ter:InvalidArgVal", "ter:NoProfile"]`.
    pub subcodes: Vec<String>,
    pub reason: String,
}

impl SoapFault {
    /// ONVIF's `ter:NotAuthorized`, under any prefix: the user or password is wrong, or the
    /// user may not make this call.
    pub fn is_not_authorized(&self) -> bool {
        std::iter::once(&self.code)
            .chain(&self.subcodes)
            .any(|code| local_part(code).eq_ignore_ascii_case("NotAuthorized"))
    }
}

impl fmt::Display for SoapFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for subcode in &self.subcodes {
            write!(f, "/{subcode}")?;
        }
        if self.reason.is_empty() {
            Ok(())
        } else {
            write!(f, " ({})", self.reason)
        }
    }
}

/// A WS-Security UsernameToken's inputs.
#[derive(Debug, Clone, Copy)]
pub struct UsernameToken<'a> {
    pub user: &'a str,
    pub password: &'a str,
    /// Random bytes, new for every request.
    pub nonce: &'a [u8],
    /// The request's creation time on the device's clock.
    pub created: Timestamp,
}

/// WS-Addressing headers, which the events service needs: the action, the address sent to, and
/// the subscription's reference parameters.
#[derive(Debug, Clone, Copy)]
pub struct Addressing<'a> {
    pub action: &'a str,
    pub to: &'a str,
    pub reference_parameters: &'a [ReferenceParameter],
}

/// One reference parameter of an endpoint reference (`wsa:ReferenceParameters`), which must be
/// sent back as a SOAP header with every request to that endpoint. Only simple (text) ones are
/// kept; the ones cameras use (subscription ids) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceParameter {
    pub namespace: Option<String>,
    pub name: String,
    pub value: String,
}

/// `Base64(SHA-1(nonce + created + password))`, WS-Security UsernameToken Profile 1.0 §3.1.
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(nonce);
    sha1.update(created.as_bytes());
    sha1.update(password.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// An xs:dateTime in UTC with whole seconds (`2026-11-26T13:30:00Z`): what every camera reads.
pub fn xs_date_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A relative xs:duration in whole seconds, at least one (`PT10S`).
pub fn xs_duration(duration: Duration) -> String {
    format!("PT{}S", duration.as_secs().max(1))
}

/// An xs:dateTime as cameras write it: with `Z` or an offset, with or without fractions; one
/// without an offset is taken as UTC (ONVIF's times are UTC).
pub fn parse_xs_date_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    text.parse::<Timestamp>().ok().or_else(|| {
        text.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|civil| civil.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|zoned| zoned.timestamp())
    })
}

/// A whole SOAP 1.2 request.
pub fn envelope(
    token: Option<&UsernameToken<'_>>,
    addressing: Option<&Addressing<'_>>,
    body: &str,
) -> String {
    let mut xml = String::with_capacity(1024 + body.len());
    xml.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    xml.push_str(&format!(
        r#"<s:Envelope xmlns:s="{SOAP_ENVELOPE_NS}" xmlns:wsse="{WSSE_NS}" xmlns:wsu="{WSU_NS}" xmlns:wsa="{WSA_NS}"><s:Header>"#
    ));
    if let Some(token) = token {
        let created = xs_date_time(token.created);
        let digest = password_digest(token.nonce, &created, token.password);
        xml.push_str(&format!(
            concat!(
                r#"<wsse:Security s:mustUnderstand="1"><wsse:UsernameToken>"#,
                r#"<wsse:Username>{user}</wsse:Username>"#,
                r#"<wsse:Password Type="{digest_type}">{digest}</wsse:Password>"#,
                r#"<wsse:Nonce EncodingType="{nonce_type}">{nonce}</wsse:Nonce>"#,
                r#"<wsu:Created>{created}</wsu:Created>"#,
                r#"</wsse:UsernameToken></wsse:Security>"#
            ),
            user = escape(token.user),
            digest_type = PASSWORD_DIGEST_TYPE,
            digest = digest,
            nonce_type = NONCE_ENCODING_TYPE,
            nonce = BASE64.encode(token.nonce),
            created = created,
        ));
    }
    if let Some(addressing) = addressing {
        xml.push_str(&format!(
            r#"<wsa:Action s:mustUnderstand="1">{}</wsa:Action><wsa:To s:mustUnderstand="1">{}</wsa:To>"#,
            escape(addressing.action),
            escape(addressing.to)
        ));
        for (i, parameter) in addressing.reference_parameters.iter().enumerate() {
            let name = &parameter.name;
            let namespace = match &parameter.namespace {
                Some(namespace) => format!(r#" xmlns:rp{i}="{}""#, escape(namespace)),
                None => String::new(),
            };
            let prefix = if parameter.namespace.is_some() {
                format!("rp{i}:")
            } else {
                String::new()
            };
            xml.push_str(&format!(
                r#"<{prefix}{name}{namespace} wsa:IsReferenceParameter="true">{}</{prefix}{name}>"#,
                escape(&parameter.value)
            ));
        }
    }
    xml.push_str("</s:Header><s:Body>");
    xml.push_str(body);
    xml.push_str("</s:Body></s:Envelope>");
    xml
}

/// Text for XML content or attributes.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Parses an answer (roxmltree refuses DTDs, so no entity expansion).
pub fn parse(text: &str) -> Result<Document<'_>, AnswerError> {
    Document::parse(text).map_err(|e| AnswerError::NotXml(e.to_string()))
}

/// The envelope's Body, or the fault it carries.
pub fn body<'a, 'i>(document: &'a Document<'i>) -> Result<Node<'a, 'i>, AnswerError> {
    let envelope = document.root_element();
    if envelope.tag_name().name() != "Envelope" {
        return Err(AnswerError::NotSoap);
    }
    let body = child(envelope, "Body").ok_or(AnswerError::NotSoap)?;
    match child(body, "Fault") {
        Some(fault) => Err(AnswerError::Fault(read_fault(fault))),
        None => Ok(body),
    }
}

/// The fault in `text`, if it is a SOAP envelope carrying one.
pub fn fault_in(text: &str) -> Option<SoapFault> {
    let document = parse(text).ok()?;
    match body(&document) {
        Err(AnswerError::Fault(fault)) => Some(fault),
        _ => None,
    }
}

fn read_fault(fault: Node<'_, '_>) -> SoapFault {
    // SOAP 1.1
    if let Some(code) = child(fault, "faultcode") {
        return SoapFault {
            code: text_of(code).unwrap_or_default().to_owned(),
            subcodes: Vec::new(),
            reason: child(fault, "faultstring")
                .and_then(text_of)
                .unwrap_or_default()
                .to_owned(),
        };
    }
    let code = child(fault, "Code");
    let value_of = |node: Option<Node<'_, '_>>| {
        node.and_then(|node| child(node, "Value"))
            .and_then(text_of)
            .unwrap_or_default()
            .to_owned()
    };
    let mut subcodes = Vec::new();
    let mut next = code.and_then(|code| child(code, "Subcode"));
    // Bounded: the document is finite and each step goes one level deeper.
    while let Some(subcode) = next {
        subcodes.push(value_of(Some(subcode)));
        next = child(subcode, "Subcode");
    }
    SoapFault {
        code: value_of(code),
        subcodes,
        reason: child(fault, "Reason")
            .and_then(|reason| child(reason, "Text"))
            .and_then(text_of)
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The first child element named `local`, in any namespace.
pub fn child<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|child| child.is_element() && child.tag_name().name() == local)
}

/// The child elements named `local`, in any namespace.
pub fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    local: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |child| child.is_element() && child.tag_name().name() == local)
}

/// Follows `path` of child elements from `node`.
pub fn path<'a, 'i>(node: Node<'a, 'i>, path: &[&str]) -> Option<Node<'a, 'i>> {
    path.iter().try_fold(node, |node, local| child(node, local))
}

/// The first element named `local` below `node` (depth first).
pub fn descendant<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.descendants()
        .find(|d| d.is_element() && d.tag_name().name() == local && *d != node)
}

/// The trimmed text of an element; `None` when empty.
pub fn text_of<'a>(node: Node<'a, '_>) -> Option<&'a str> {
    node.text().map(str::trim).filter(|text| !text.is_empty())
}

/// An attribute by local name, in any namespace (`token`, `UtcTime`, ...).
pub fn attribute<'a>(node: Node<'a, '_>, local: &str) -> Option<&'a str> {
    node.attributes()
        .find(|attribute| attribute.name() == local)
        .map(|attribute| attribute.value())
}

/// `ter:NotAuthorized` -> `NotAuthorized`.
pub fn local_part(qualified: &str) -> &str {
    qualified
        .rsplit_once(':')
        .map_or(qualified, |(_, local)| local)
        .trim()
}

/// A required child's text.
pub fn required_text<'a>(
    node: Node<'a, '_>,
    local: &str,
    element: &'static str,
) -> Result<&'a str, AnswerError> {
    child(node, local)
        .and_then(text_of)
        .ok_or(AnswerError::Missing { element })
}

/// A required child holding an xs:dateTime.
pub fn required_time(
    node: Node<'_, '_>,
    local: &str,
    element: &'static str,
) -> Result<Timestamp, AnswerError> {
    let text = required_text(node, local, element)?;
    parse_xs_date_time(text).ok_or_else(|| AnswerError::Invalid {
        element,
        value: text.to_owned(),
        expected: "an xs:dateTime",
    })
}

/// An optional child holding an xs:dateTime; present but unreadable is an error.
pub fn optional_time(
    node: Node<'_, '_>,
    local: &str,
    element: &'static str,
) -> Result<Option<Timestamp>, AnswerError> {
    match child(node, local).and_then(text_of) {
        None => Ok(None),
        Some(text) => parse_xs_date_time(text)
            .map(Some)
            .ok_or_else(|| AnswerError::Invalid {
                element,
                value: text.to_owned(),
                expected: "an xs:dateTime",
            }),
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    const NONCE: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    #[test]
    fn password_digest_matches_the_formula_and_a_known_vector() -> anyhow::Result<()> {
        let created = "2026-11-26T13:30:00Z";
        let password = "s3cret&pass";
        // By hand: SHA-1 over the raw nonce, then the created text, then the password.
        let mut input = NONCE.to_vec();
        input.extend_from_slice(created.as_bytes());
        input.extend_from_slice(password.as_bytes());
        let by_hand = BASE64.encode(Sha1::digest(&input));
        assert_eq!(password_digest(&NONCE, created, password), by_hand);
        // Computed independently (Python's hashlib) for the same inputs.
        assert_eq!(by_hand, "8HThKeAeAVt/9yiJA+RBTUFlUlM=");
        assert_eq!(BASE64.encode(NONCE), "AQIDBAUGBwgJCgsMDQ4PEA==");
        Ok(())
    }

    #[test]
    fn envelope_carries_the_token_and_addressing_and_parses_back() -> anyhow::Result<()> {
        let created: Timestamp = "2026-11-26T13:30:00.750Z".parse()?;
        let token = UsernameToken {
            user: "ad<min",
            password: "s3cret&pass",
            nonce: &NONCE,
            created,
        };
        let parameters = [ReferenceParameter {
            namespace: Some("http://vendor.example/sub".into()),
            name: "SubscriptionId".into(),
            value: "7".into(),
        }];
        let addressing = Addressing {
            action: "urn:action",
            to: "http://127.0.0.1/sub?a=1&b=2",
            reference_parameters: &parameters,
        };
        let xml = envelope(
            Some(&token),
            Some(&addressing),
            "<x:Ping xmlns:x=\"urn:x\"/>",
        );
        let document = parse(&xml)?;
        let header = child(document.root_element(), "Header").context("missing")?;
        let username_token = path(header, &["Security", "UsernameToken"]).context("missing")?;
        assert_eq!(required_text(username_token, "Username", "u")?, "ad<min");
        assert_eq!(
            required_text(username_token, "Created", "c")?,
            "2026-11-26T13:30:00Z"
        );
        assert_eq!(
            required_text(username_token, "Nonce", "n")?,
            "AQIDBAUGBwgJCgsMDQ4PEA=="
        );
        let password = child(username_token, "Password").context("missing")?;
        assert_eq!(password.attribute("Type"), Some(PASSWORD_DIGEST_TYPE));
        assert_eq!(text_of(password), Some("8HThKeAeAVt/9yiJA+RBTUFlUlM="));
        assert_eq!(
            required_text(header, "To", "t")?,
            "http://127.0.0.1/sub?a=1&b=2"
        );
        let id = child(header, "SubscriptionId").context("missing")?;
        assert_eq!(id.tag_name().namespace(), Some("http://vendor.example/sub"));
        assert_eq!(text_of(id), Some("7"));
        let body = body(&document)?;
        assert_eq!(
            child(body, "Ping")
                .context("missing")?
                .tag_name()
                .namespace(),
            Some("urn:x")
        );
        Ok(())
    }

    #[test]
    fn soap_1_2_fault_with_nested_subcodes() -> anyhow::Result<()> {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:ter="http://www.onvif.org/ver10/error">
  <env:Body>
    <env:Fault>
      <env:Code>
        <env:Value>env:Sender</env:Value>
        <env:Subcode>
          <env:Value>ter:InvalidArgVal</env:Value>
          <env:Subcode><env:Value>ter:NoProfile</env:Value></env:Subcode>
        </env:Subcode>
      </env:Code>
      <env:Reason><env:Text xml:lang="en">The requested profile token does not exist</env:Text></env:Reason>
    </env:Fault>
  </env:Body>
</env:Envelope>"#;
        let fault = fault_in(xml).context("missing")?;
        assert_eq!(fault.code, "env:Sender");
        assert_eq!(fault.subcodes, ["ter:InvalidArgVal", "ter:NoProfile"]);
        assert!(!fault.is_not_authorized());
        assert_eq!(
            fault.to_string(),
            "env:Sender/ter:InvalidArgVal/ter:NoProfile (The requested profile token does not exist)"
        );
        Ok(())
    }

    #[test]
    fn not_authorized_under_any_prefix_and_soap_1_1_faults() -> anyhow::Result<()> {
        let xml = r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" xmlns:e="http://www.onvif.org/ver10/error"><SOAP-ENV:Body><SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value><SOAP-ENV:Subcode><SOAP-ENV:Value>e:NotAuthorized</SOAP-ENV:Value></SOAP-ENV:Subcode></SOAP-ENV:Code><SOAP-ENV:Reason><SOAP-ENV:Text xml:lang="en">Sender not Authorized</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;
        assert!(fault_in(xml).context("missing")?.is_not_authorized());
        let soap_1_1 = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>bad request</faultstring></s:Fault></s:Body></s:Envelope>"#;
        let fault = fault_in(soap_1_1).context("missing")?;
        assert_eq!(
            (fault.code.as_str(), fault.reason.as_str()),
            ("s:Client", "bad request")
        );
        Ok(())
    }

    #[test]
    fn bad_documents_are_errors_not_panics() -> anyhow::Result<()> {
        for junk in [
            "",
            "garbage",
            "<a>",
            "<?xml version=\"1.0\"?>",
            "\u{0}\u{1}<<>>",
        ] {
            let result = parse(junk).and_then(|document| body(&document).map(drop));
            assert!(
                matches!(result, Err(AnswerError::NotXml(_))),
                "{junk:?}: {result:?}"
            );
        }
        let not_soap = parse("<html><body>hello</body></html>")?;
        assert_eq!(
            body(&not_soap).err().context("expected an error")?,
            AnswerError::NotSoap
        );
        let no_body = parse("<s:Envelope xmlns:s=\"urn:s\"><s:Header/></s:Envelope>")?;
        assert_eq!(
            body(&no_body).err().context("expected an error")?,
            AnswerError::NotSoap
        );
        // Entity expansion is refused outright.
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><Envelope><Body>&lol2;</Body></Envelope>"#;
        assert!(matches!(parse(bomb), Err(AnswerError::NotXml(_))));
        assert!(fault_in("not xml").is_none());
        Ok(())
    }

    #[test]
    fn times_and_durations() -> anyhow::Result<()> {
        let at = "2026-11-26T13:30:00Z".parse::<Timestamp>()?;
        assert_eq!(parse_xs_date_time("2026-11-26T13:30:00Z"), Some(at));
        assert_eq!(parse_xs_date_time(" 2026-11-26T13:30:00 "), Some(at));
        assert_eq!(parse_xs_date_time("2026-11-26T14:30:00+01:00"), Some(at));
        assert!(parse_xs_date_time("2026-11-26T13:30:00.5Z").is_some());
        assert_eq!(parse_xs_date_time("yesterday"), None);
        assert_eq!(xs_date_time(at), "2026-11-26T13:30:00Z");
        assert_eq!(xs_duration(Duration::from_secs(10)), "PT10S");
        assert_eq!(xs_duration(Duration::from_millis(300)), "PT1S");
        assert_eq!(local_part("ter:NotAuthorized"), "NotAuthorized");
        assert_eq!(local_part("NotAuthorized"), "NotAuthorized");
        assert_eq!(escape("a&b<c>\"'"), "a&amp;b&lt;c&gt;&quot;&apos;");
        Ok(())
    }
}
