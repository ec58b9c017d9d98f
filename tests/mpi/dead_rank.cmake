# Runs COMMAND (mpiexec -n 2 mpi_dead_rank FAULT) and checks that the job ends, with an error, well before its time
# limit: FAULT=hang, rank 1 sleeps while rank 0 waits in a barrier that times out after 2 s and aborts the job;
# FAULT=exit, rank 1 exits without MPI_Finalize and the job ends; FAULT=hang-sum, as hang with a large sum.
string(TIMESTAMP start "%s")
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 90)
string(TIMESTAMP stop "%s")
math(EXPR seconds "${stop} - ${start}")
if(rc EQUAL 0 OR rc MATCHES "timeout")
  message(FATAL_ERROR "the job with a ${FAULT} rank should end with an error within 90 s (got '${rc}' after ${seconds} s):\n${out}\n${err}")
endif()
if(FAULT STREQUAL "hang" AND NOT "${out}${err}" MATCHES "barrier on rank 0 of 2 did not complete within 2 s")
  message(FATAL_ERROR "rank 0 should report its timed-out barrier:\n${out}\n${err}")
endif()
if(FAULT STREQUAL "hang-sum" AND NOT "${out}${err}" MATCHES "all_reduce_sum of 1048576 floats \\(waiting for every rank\\) on rank 0 of 2 did not complete within 2 s")
  message(FATAL_ERROR "rank 0 should report its timed-out sum:\n${out}\n${err}")
endif()
message(STATUS "a ${FAULT} rank ended the job with status ${rc} after ${seconds} s")
