# tests/self_contained_test.cmake: the repository must stand alone. Fails when a file of the repository names
# a folder outside it: the sibling "shared" folder of the development machines (its spec, oracle or seed files)
# or an absolute path of a development machine (a home directory, the work area, a temporary folder used as a
# data location). System locations a user's machine also has (the Debian data set folder, the CUDA toolkit,
# system headers) are fine.
#
#   cmake -DSOURCE_DIR=<repository root> -P tests/self_contained_test.cmake
#
# Files: in a git checkout, every tracked file plus every untracked file that .gitignore does not exclude (what a
# commit would add); otherwise every file under SOURCE_DIR outside the build and output folders.
# The patterns below are assembled from pieces so that this script does not match itself.
cmake_minimum_required(VERSION 3.20)

if(NOT SOURCE_DIR)
  message(FATAL_ERROR "self_contained_test.cmake: pass -DSOURCE_DIR=<repository root>")
endif()
get_filename_component(SOURCE_DIR "${SOURCE_DIR}" ABSOLUTE)

# ---------------------------------------------------------------- the files to scan
set(files "")
find_program(GIT_EXECUTABLE git)
if(GIT_EXECUTABLE AND EXISTS "${SOURCE_DIR}/.git")
  execute_process(COMMAND "${GIT_EXECUTABLE}" -c core.quotepath=off ls-files --cached --others --exclude-standard
                  WORKING_DIRECTORY "${SOURCE_DIR}" OUTPUT_VARIABLE listing RESULT_VARIABLE status ERROR_VARIABLE error)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "self_contained_test.cmake: git ls-files failed in ${SOURCE_DIR}: ${error}")
  endif()
  string(REPLACE ";" "\\;" listing "${listing}")
  string(REPLACE "\n" ";" listing "${listing}")
  foreach(path IN LISTS listing)
    if(path AND EXISTS "${SOURCE_DIR}/${path}" AND NOT IS_DIRECTORY "${SOURCE_DIR}/${path}")
      list(APPEND files "${path}")
    endif()
  endforeach()
  set(how "git ls-files")
else()
  file(GLOB_RECURSE candidates RELATIVE "${SOURCE_DIR}" "${SOURCE_DIR}/*")
  foreach(path IN LISTS candidates)
    # The folders .gitignore names (build and output trees, caches) and git's own.
    if(NOT path MATCHES "^(\\.git|build[^/]*|out[^/]*|\\.cache|treelora-cache)/")
      list(APPEND files "${path}")
    endif()
  endforeach()
  set(how "a recursive glob (not a git checkout)")
endif()
list(LENGTH files file_count)
if(file_count EQUAL 0)
  message(FATAL_ERROR "self_contained_test.cmake: found no files under ${SOURCE_DIR}")
endif()

# ---------------------------------------------------------------- the patterns
set(s "/")
set(sibling "shared")
# 1. The sibling folder, relative (dot-dot) or by one of its subfolders.
set(sibling_pattern "\\.\\.${s}${sibling}|${sibling}${s}(spec|oracle|seeds|hooks)|${sibling}${s}STYLE\\.md")
# 2. An absolute path into a development machine's home, work or temporary folders. The character before the
#    slash must not continue a word or a relative path (so build/work/ or tree/root/ do not count).
set(machine_roots "(work|home|root|tmp|Users)")
set(machine_loose "${s}${machine_roots}${s}")
set(machine_strict "[^A-Za-z0-9_.~}$)-]${s}${machine_roots}${s}")

set(offences "")
foreach(path IN LISTS files)
  file(STRINGS "${SOURCE_DIR}/${path}" hits REGEX "${sibling_pattern}|${machine_loose}")
  foreach(line IN LISTS hits)
    set(bad FALSE)
    if(line MATCHES "${sibling_pattern}")
      set(bad TRUE)
    elseif(" ${line}" MATCHES "${machine_strict}")
      set(bad TRUE)
    endif()
    if(bad)
      string(STRIP "${line}" line)
      string(APPEND offences "  ${path}: ${line}\n")
    endif()
  endforeach()
endforeach()

if(offences)
  message(FATAL_ERROR "The repository must stand alone, but these lines name a path outside it (the sibling "
                      "${sibling} folder or a development machine's absolute path). Write the content into the "
                      "repository (docs/, tests/data/) or use a path relative to the repository root:\n${offences}")
endif()
message(STATUS "self_contained: ${file_count} files (${how}) name no path outside the repository")
