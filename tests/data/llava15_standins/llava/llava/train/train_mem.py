# The LLaVA checkout stand-in of the recipe's test: the file deepspeed is told to run (the stand-in deepspeed checks
# it is there and does the "training" itself).
