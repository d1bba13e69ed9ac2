"""Helpers shared by the tests (not test modules): ``dlra`` builds low-rank matrices and fields, ``json_numbers`` walks command JSON."""
