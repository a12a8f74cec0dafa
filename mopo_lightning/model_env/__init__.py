"""The learned model as an MDP: the uncertainty penalties, the penalised model env, its branched rollouts and buffer."""
