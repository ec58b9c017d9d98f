# Runs PROGRAM (split_fashion_mnist or debian_text_stream) --quick into WORK_DIR and checks that every way of getting
# to the results agrees:
#   straight:  --prepare-only (the cached base model), then one process straight through;
#   resumed:   stopped after task 2 of every run (--stop-after-task 2: exit status 3, checkpoints written, also inside
#              tasks), then the same command with --resume;
#   collected: in the resumed folder, whose runs have all finished, results.json removed: --shard 0/2 --resume and
#              --shard 1/2 --resume (each reads its half of the finished runs back, says so and writes no results),
#              then --resume without --shard, which reads every run back without training and writes the results
#              (what scripts/main.sh does after its shards).
# The resumed and collected results.json must hold ROWS rows (default 16) and, for every method, protocol and seed,
# the same accuracy matrix, summary metrics and per-task losses as the straight run, bit for bit (the JSON texts are
# compared); the text half's answer_loss.json (the held-out losses, carried by the checkpoints) must be the same file.
if(NOT DEFINED ROWS)
  set(ROWS 16)
endif()
file(REMOVE_RECURSE "${WORK_DIR}/straight" "${WORK_DIR}/resumed")
set(common --quick --cache "${WORK_DIR}/cache")

function(run_program name expected_rc)
  execute_process(COMMAND "${PROGRAM}" ${common} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc STREQUAL expected_rc)
    message(FATAL_ERROR "the ${name} run should end with status ${expected_rc} (got ${rc}):\n${out}\n${err}")
  endif()
  set(output "${out}" PARENT_SCOPE)
endfunction()

function(compare_with_straight name)
  file(READ "${WORK_DIR}/straight/results.json" straight)
  file(READ "${WORK_DIR}/${name}/results.json" other)
  string(JSON rows LENGTH "${straight}")
  string(JSON rows_other LENGTH "${other}")
  if(NOT rows EQUAL rows_other OR rows LESS ROWS)
    message(FATAL_ERROR "results.json has ${rows} rows straight and ${rows_other} ${name} (expected ${ROWS} each)")
  endif()
  math(EXPR last "${rows} - 1")
  foreach(i RANGE ${last})
    foreach(field method protocol seed matrix acc bwt forgetting fwt final_loss_per_task state_bytes steps)
      string(JSON a GET "${straight}" ${i} ${field})
      string(JSON b GET "${other}" ${i} ${field})
      if(NOT a STREQUAL b)
        string(JSON method GET "${straight}" ${i} method)
        message(FATAL_ERROR "row ${i} (${method}): '${field}' is ${a} straight but ${b} ${name}")
      endif()
    endforeach()
  endforeach()
  if(EXISTS "${WORK_DIR}/straight/answer_loss.json")
    file(READ "${WORK_DIR}/straight/answer_loss.json" a)
    file(READ "${WORK_DIR}/${name}/answer_loss.json" b)
    if(NOT a STREQUAL b)
      message(FATAL_ERROR "answer_loss.json differs between the straight and the ${name} run:\n${a}\n---\n${b}")
    endif()
  endif()
  message(STATUS "${name}: ${rows} rows equal to the straight run's")
endfunction()

run_program(prepare 0 --out "${WORK_DIR}/straight" --prepare-only)
if(NOT output MATCHES "ready in")
  message(FATAL_ERROR "--prepare-only does not say where the base model is:\n${output}")
endif()
run_program(straight 0 --out "${WORK_DIR}/straight")
# the stopped and resumed runs also checkpoint inside tasks: the results must not depend on it
run_program(stopped 3 --out "${WORK_DIR}/resumed" --stop-after-task 2 --checkpoint-every 5)
if(NOT output MATCHES "stopped after task 2 as asked")
  message(FATAL_ERROR "the stopped run does not say where it stopped:\n${output}")
endif()
run_program(resumed 0 --out "${WORK_DIR}/resumed" --resume --checkpoint-every 5)
compare_with_straight(resumed)

file(REMOVE "${WORK_DIR}/resumed/results.json" "${WORK_DIR}/resumed/answer_loss.json")
math(EXPR runs_per_shard "${ROWS} / 4")  # ROWS rows: 2 per run in the vision half (two protocols), 1 in the text half
if(PROGRAM MATCHES "debian_text_stream")
  math(EXPR runs_per_shard "${ROWS} / 2")
endif()
foreach(k 0 1)
  run_program("shard ${k}/2" 0 --out "${WORK_DIR}/resumed" --resume --threads 1 --shard ${k}/2)
  if(NOT output MATCHES "shard ${k}/2: ${runs_per_shard} run\\(s\\) finished")
    message(FATAL_ERROR "shard ${k}/2 should report its ${runs_per_shard} runs:\n${output}")
  endif()
  if(EXISTS "${WORK_DIR}/resumed/results.json")
    message(FATAL_ERROR "shard ${k}/2 wrote results.json: only the collecting run (--resume, no --shard) may")
  endif()
endforeach()
run_program(collecting 0 --out "${WORK_DIR}/resumed" --resume)
compare_with_straight(resumed)
