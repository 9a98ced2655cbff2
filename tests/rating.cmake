# rating: unit suites (hand-computed cases; properties over >= 10^6 random cases) and the
# differential test against PostgreSQL NUMERIC (integration).
gm_add_test(NAME test_rating SOURCES test_rating.c LIBS gm_rating LABELS unit TIMEOUT 60)
gm_add_test(NAME test_rating_props SOURCES test_rating_props.c LIBS gm_rating LABELS unit
            TIMEOUT 300)
gm_add_test(NAME test_rating_kinds SOURCES test_rating_kinds.c LIBS gm_rating LABELS unit
            TIMEOUT 120)
gm_add_test(NAME test_rating_terms SOURCES test_rating_terms.c LIBS gm_rating LABELS unit
            TIMEOUT 60)
gm_add_test(NAME test_rating_variants SOURCES test_rating_variants.c LIBS gm_rating LABELS unit
            TIMEOUT 60)
gm_add_test(NAME test_rating_pg SOURCES test_rating_pg.c LIBS gm_rating LABELS integration
            TIMEOUT 120)
gm_add_test(NAME test_rating_cli SOURCES test_rating_cli.c LABELS unit TIMEOUT 60)
if(TARGET gridmeter)
    add_dependencies(test_rating_cli gridmeter)
endif()
