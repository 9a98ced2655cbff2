# dashboard: included by api/CMakeLists.txt. Embeds the static files of dashboard/ into gm_api
# (generated C, dashboard/embed.cmake) and adds api/static.c, which serves them under
# /dashboard. Editing a file under dashboard/ rebuilds the embedded copy.
file(GLOB GM_DASHBOARD_FILES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/dashboard/*.html
     ${PROJECT_SOURCE_DIR}/dashboard/*.js ${PROJECT_SOURCE_DIR}/dashboard/*.css
     ${PROJECT_SOURCE_DIR}/dashboard/*.svg)
add_custom_command(
    OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/dashboard_embedded.c
    COMMAND ${CMAKE_COMMAND} -DDIR=${PROJECT_SOURCE_DIR}/dashboard
            -DOUT=${CMAKE_CURRENT_BINARY_DIR}/dashboard_embedded.c
            -P ${PROJECT_SOURCE_DIR}/dashboard/embed.cmake
    DEPENDS ${GM_DASHBOARD_FILES} ${PROJECT_SOURCE_DIR}/dashboard/embed.cmake
    COMMENT "Embedding dashboard/ static files")
target_sources(gm_api PRIVATE ${PROJECT_SOURCE_DIR}/api/static.c
               ${CMAKE_CURRENT_BINARY_DIR}/dashboard_embedded.c)
