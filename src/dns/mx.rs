//! Pure MX list handling: RFC 5321 §5.1 ordering, RFC 7505 null MX, name normalisation.

use rand::seq::SliceRandom;
use rand::Rng;

use super::DnsError;

/// One mail exchanger to try, in the order returned by [`super::Resolver::mx_hosts`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MxHost {
    /// Lower is tried first.
    pub preference: u16,
    /// ASCII (A-label) host name, lower case, without the trailing dot.
    pub host: String,
}

/// A DNS name as the rest of sealpost writes it: lower case, no trailing dot.
pub(crate) fn display_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Turn the MX answer for `domain` into the list to try.
///
/// `records` are (preference, exchange) pairs as received. A single MX whose exchange is the root
/// (".") is a null MX → [`DnsError::NullMx`]. Root exchanges mixed with real ones are ignored (RFC
/// 7505 §3 forbids the mix; the real hosts are the sender's best guess). Duplicates are dropped,
/// keeping the lowest preference; the result is sorted by preference with ties shuffled.
pub(crate) fn order_mx<R: Rng + ?Sized>(
    domain: &str,
    records: &[(u16, String)],
    rng: &mut R,
) -> Result<Vec<MxHost>, DnsError> {
    let mut hosts: Vec<MxHost> = Vec::with_capacity(records.len());
    for (preference, exchange) in records {
        let host = display_name(exchange);
        if host.is_empty() {
            continue;
        }
        match hosts.iter_mut().find(|h| h.host == host) {
            Some(seen) => seen.preference = seen.preference.min(*preference),
            None => hosts.push(MxHost {
                preference: *preference,
                host,
            }),
        }
    }
    if hosts.is_empty() {
        // Every exchange was "." (the empty list case is the caller's implicit MX).
        return Err(DnsError::NullMx(display_name(domain)));
    }
    hosts.shuffle(rng);
    // Stable sort keeps the shuffled order within one preference.
    hosts.sort_by_key(|h| h.preference);
    Ok(hosts)
}

/// RFC 5321 §5.1 implicit MX: the domain itself at preference 0.
pub(crate) fn implicit_mx(domain: &str) -> Vec<MxHost> {
    vec![MxHost {
        preference: 0,
        host: display_name(domain),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn recs(list: &[(u16, &str)]) -> Vec<(u16, String)> {
        list.iter().map(|(p, h)| (*p, h.to_string())).collect()
    }

    #[test]
    fn sorted_by_preference_and_normalised() {
        let mut rng = StdRng::seed_from_u64(7);
        let got = order_mx(
            "Example.TEST.",
            &recs(&[
                (20, "MX2.example.test."),
                (5, "mx0.example.test."),
                (10, "mx1.example.test"),
            ]),
            &mut rng,
        )
        .unwrap();
        let hosts: Vec<_> = got
            .iter()
            .map(|h| (h.preference, h.host.as_str()))
            .collect();
        assert_eq!(
            hosts,
            [
                (5, "mx0.example.test"),
                (10, "mx1.example.test"),
                (20, "mx2.example.test")
            ]
        );
    }

    #[test]
    fn ties_are_shuffled_but_stay_in_their_rank() {
        let records = recs(&[
            (10, "a.test."),
            (10, "b.test."),
            (10, "c.test."),
            (50, "z.test."),
        ]);
        let mut rng = StdRng::seed_from_u64(1);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let got = order_mx("d.test", &records, &mut rng).unwrap();
            assert_eq!(got.len(), 4);
            assert_eq!(got[3].host, "z.test", "preference 50 must stay last");
            firsts.insert(got[0].host.clone());
        }
        assert_eq!(
            firsts.len(),
            3,
            "every tied host should come first sometimes"
        );
    }

    #[test]
    fn single_root_exchange_is_null_mx() {
        let mut rng = StdRng::seed_from_u64(0);
        let err = order_mx("NoMail.test.", &recs(&[(0, ".")]), &mut rng).unwrap_err();
        assert_eq!(err, DnsError::NullMx("nomail.test".into()));
    }

    #[test]
    fn root_mixed_with_real_hosts_is_ignored() {
        let mut rng = StdRng::seed_from_u64(0);
        let got = order_mx("d.test", &recs(&[(0, "."), (10, "mx.d.test.")]), &mut rng).unwrap();
        assert_eq!(
            got,
            vec![MxHost {
                preference: 10,
                host: "mx.d.test".into()
            }]
        );
    }

    #[test]
    fn duplicates_keep_the_best_preference() {
        let mut rng = StdRng::seed_from_u64(0);
        let got = order_mx(
            "d.test",
            &recs(&[(30, "mx.d.test."), (10, "MX.d.test")]),
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![MxHost {
                preference: 10,
                host: "mx.d.test".into()
            }]
        );
    }

    #[test]
    fn implicit_mx_is_the_domain_at_zero() {
        assert_eq!(
            implicit_mx("Only-A.test."),
            vec![MxHost {
                preference: 0,
                host: "only-a.test".into()
            }]
        );
    }
}
