# Runs PROGRAM (split_fashion_mnist or debian_text_stream) --quick in one process, then data-parallel on 2 processes
# (--mpi under MPIEXEC), into WORK_DIR/one and WORK_DIR/two, and compares the two with COMPARE (compare_runs.cpp):
# the same rows and steps; accuracy matrices within 0.02 and losses within 1e-4 relative (float sums in another
# order), except TreeLoRA's paper mode, whose sign pull and bandit argmin make last-bit differences another path:
# its final accuracy within 0.05. The data-parallel run must say so, write results on rank 0 and finish with 0.
file(REMOVE_RECURSE "${WORK_DIR}/one" "${WORK_DIR}/two")
set(common --quick --cache "${WORK_DIR}/cache" --threads 1)

function(run name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the ${name} run ended with status ${rc}:\n${out}\n${err}")
  endif()
  set(output "${out}" PARENT_SCOPE)
  set(errors "${err}" PARENT_SCOPE)
endfunction()

run(prepare "${PROGRAM}" ${common} --out "${WORK_DIR}/one" --prepare-only)
run(one-process "${PROGRAM}" ${common} --out "${WORK_DIR}/one")
string(REPLACE "|" ";" mpiexec "${MPIEXEC}")
run(data-parallel ${mpiexec} 2 "${PROGRAM}" ${common} --out "${WORK_DIR}/two" --mpi)
if(NOT errors MATCHES "data-parallel over 2 processes")
  message(FATAL_ERROR "the data-parallel run does not say it runs on 2 processes:\n${errors}")
endif()
string(REGEX MATCHALL "wrote [^\n]*results.json" said "${output}")
list(LENGTH said times)
if(NOT times EQUAL 1)
  message(FATAL_ERROR "the results should be reported once, by rank 0 (${times} times):\n${output}")
endif()
run(compare "${COMPARE}" "${WORK_DIR}/one" "${WORK_DIR}/two" --matrix 0.02 --loss 1e-4 --accuracy 0.05 --diverging TreeLoRA-paper)
message(STATUS "${output}")
