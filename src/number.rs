//! JSON numbers that keep their value: the one rule the verifier applies to
//! a token's claims and the signer to the numbers it writes, so that the
//! signer never makes a token this crate's verifier refuses.

/// Whether every number in `json` (a document serde_json has parsed) keeps
/// its value in the parsed [`Value`](serde_json::Value): the number read is
/// the one written.
///
/// serde_json keeps integers that fit in `u64`/`i64` exactly and reads
/// anything else as the nearest `f64` (correctly rounded, with the
/// `float_roundtrip` feature). A number is accepted when that value, written
/// back in its shortest form, is the number as written (leading and
/// trailing zeros, the exponent's form and the sign of zero aside). So two
/// different numbers never become the same claim: an integer beyond 64 bits
/// or a decimal with more digits than an `f64` holds is refused.
pub(crate) fn numbers_keep_their_value(json: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&byte) = json.get(i) {
        match byte {
            b'"' => {
                // Skip the string (valid JSON: escapes are well formed).
                i += 1;
                while let Some(&byte) = json.get(i) {
                    i += match byte {
                        b'\\' => 2,
                        b'"' => break,
                        _ => 1,
                    };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while json
                    .get(i)
                    .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                if !number_keeps_its_value(&json[start..i]) {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

/// One JSON number literal: see [`numbers_keep_their_value`].
pub(crate) fn number_keeps_its_value(literal: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(literal) else {
        return false;
    };
    // The common case: an integer serde_json keeps as u64 or i64.
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let fits = match text.starts_with('-') {
            true => text.parse::<i64>().is_ok(),
            false => text.parse::<u64>().is_ok(),
        };
        if fits {
            return true;
        }
    }
    // Otherwise the f64 serde_json reads, in its shortest form, must be the
    // same decimal number.
    let Ok(number) = serde_json::from_str::<serde_json::Number>(text) else {
        return false;
    };
    decimal(text.as_bytes()) == decimal(number.to_string().as_bytes())
}

/// A JSON number as (negative, significant digits, exponent) with the value
/// `0.DIGITS * 10^exponent`, without leading or trailing zeros; zero is
/// `(false, [], 0)` whatever its sign.
fn decimal(text: &[u8]) -> (bool, Vec<u8>, i64) {
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (mantissa, exponent) = match text.iter().position(|b| matches!(b, b'e' | b'E')) {
        Some(at) => {
            let (sign, digits) = match &text[at + 1..] {
                [b'-', digits @ ..] => (-1, digits),
                [b'+', digits @ ..] => (1, digits),
                digits => (1, digits),
            };
            // Saturating: an exponent this large makes the number 0 or out
            // of range, which serde_json has settled already.
            let magnitude = digits.iter().fold(0i64, |acc, d| {
                acc.saturating_mul(10)
                    .saturating_add(i64::from(d.wrapping_sub(b'0')))
            });
            (&text[..at], sign * magnitude.min(i64::MAX / 4))
        }
        None => (text, 0),
    };
    let (integer, fraction) = match mantissa.iter().position(|&b| b == b'.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, &[][..]),
    };
    let all: Vec<u8> = integer.iter().chain(fraction).copied().collect();
    let Some(last) = all.iter().rposition(|&d| d != b'0') else {
        return (false, Vec::new(), 0);
    };
    let leading = all.iter().take_while(|&&d| d == b'0').count();
    // Lengths are bounded by the token's size limit.
    let len = |n: usize| i64::try_from(n).unwrap_or(i64::MAX / 4);
    let point = len(integer.len()) - len(leading);
    (
        negative,
        all[leading..=last].to_vec(),
        exponent.saturating_add(point),
    )
}
