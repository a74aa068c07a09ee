"""Side-by-side parity with a live Kamailio 5.6.3 (issue 5, DESIGN §1).

Every recorded Kamailio scenario (tests/fixtures/golden/cmap) is replayed against a live
Kamailio running ../shared/oracle/kamailio-cmap.cfg and against msrpd's cmap route; both
transcripts are normalised and compared frame by frame. Where msrpd differs from Kamailio on
purpose, expected_differences.py says how and why, and pins msrpd's exact bytes.
"""
