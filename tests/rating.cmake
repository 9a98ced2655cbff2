# rating: unit suites (hand-computed cases; properties over >= 10^6 random cases) and the
# differential test against PostgreSQL NUMERIC (integration).
gm_add_test(NAME test_rating SOURCES test_rating.c LIBS gm_rating LABELS unit TIMEOUT 60)
